"""Per-rule settings of ``ngrad compare``: the compare configuration, the presets, and how they
combine into each rule's run configuration.

A compare configuration is a TOML file of shared run settings (any ``ngrad train`` key) and one
table per rule that overrides them::

    epochs = 10
    [rules.ep]
    lr = 0.02
    [rules.ep.options]
    nudging_strength = 0.1

A preset file has the same ``[rules.NAME]`` tables (and, as metadata, the ``data`` and ``model``
its values were chosen on); ngrad ships one per data set in ``ngrad/train/presets/<data>.toml``.
A rule's table takes the keys :data:`PER_RULE_KEYS`, a free-text ``source`` (where the values
come from, recorded with the results) and an ``options`` table of the rule's own options.

Precedence, lowest first: TrainConfig's defaults, the shared settings, the preset's table of the
rule, the compare configuration's table of the rule, the flags given on the command line. A
shared ``feedback_lr`` reaches only the rules whose learned feedback takes its own learning rate;
a rule's own ``feedback_lr`` on a rule that has none is refused.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ngrad.errors import ConfigError
from ngrad.options import build_options
from ngrad.train.config import TrainConfig, load_config_file

__all__ = [
    "PER_RULE_KEYS",
    "Presets",
    "RuleSettings",
    "load_presets",
    "parse_rule_tables",
    "rule_values",
    "shipped_preset_names",
    "split_compare_values",
]

PER_RULE_KEYS = (
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "feedback_lr",
    "epochs",
    "batch_size",
    "lr_schedule",
    "lr_milestones",
    "lr_gamma",
)
"""The run settings a rule's table may set (besides ``source`` and ``options``)."""

PRESET_METADATA = ("data", "model")
PRESET_PACKAGE = "ngrad.train.presets"


@dataclass(frozen=True)
class RuleSettings:
    """One rule's table: settings (keys of PER_RULE_KEYS), its rule options, and their source."""

    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True)
class Presets:
    """A preset file: where it was read from, what it was chosen on, and one table per rule."""

    origin: str
    rules: dict[str, RuleSettings]
    data: str | None = None
    model: str | None = None


def parse_rule_tables(tables: Any, where: str) -> dict[str, RuleSettings]:
    """The ``[rules]`` tables of a file, each checked: a registered rule, known keys of the
    right types, options the rule has (ConfigError naming the bad key and ``where``)."""
    from ngrad.rules import available_rules, get_rule_class

    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: 'rules' must hold one table per rule, e.g. [rules.ep]")
    parsed = {}
    for name, table in tables.items():
        if name not in available_rules():
            raise ConfigError(
                f"{where}: [rules.{name}] names no rule; rules: {', '.join(available_rules())}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [rules.{name}] must be a table of setting = value")
        owner = f"{where}: [rules.{name}]"
        unknown = sorted(set(table) - {*PER_RULE_KEYS, "source", "options"})
        if unknown:
            raise ConfigError(
                f"{owner} has no setting {unknown[0]!r}; a rule's table takes "
                f"{', '.join(PER_RULE_KEYS)}, source and an options table"
            )
        settings = {key: table[key] for key in PER_RULE_KEYS if key in table}
        checked = build_options(TrainConfig, settings, owner)  # types and bounds
        settings = {key: getattr(checked, key) for key in settings}
        source = table.get("source")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"{owner} option 'source' must be text, got {source!r}")
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"{owner}: 'options' must be a table, e.g. [rules.{name}.options]")
        build_options(get_rule_class(name).Options, options, f"{owner} options")
        parsed[name] = RuleSettings(settings, dict(options), source)
    return parsed


def split_compare_values(values: dict[str, Any], where: str) -> tuple[dict, dict]:
    """(shared settings, {rule: RuleSettings}) of a compare configuration's mapping."""
    values = dict(values)
    per_rule = parse_rule_tables(values.pop("rules", {}), where)
    return values, per_rule


def shipped_preset_names() -> list[str]:
    """The data sets ngrad ships presets for."""
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_presets(path: str | Path | None, data: str) -> Presets | None:
    """The presets in ``path``, or with None the ones ngrad ships for ``data`` (None where it
    ships none). ConfigError for an unreadable file or a bad key."""
    if path is None:
        resource = resources.files(PRESET_PACKAGE) / f"{data}.toml"
        if not resource.is_file():
            return None
        origin = f"ngrad's presets for {data} (ngrad/train/presets/{data}.toml)"
        try:
            values = tomllib.loads(resource.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:  # pragma: no cover - shipped files are tested
            raise ConfigError(f"{origin} is not valid TOML: {error}") from None
    else:
        origin = str(path)
        values = load_config_file(path)
    unknown = sorted(set(values) - {*PRESET_METADATA, "rules"})
    if unknown:
        raise ConfigError(
            f"preset file {origin!r} has no setting {unknown[0]!r}: a preset holds [rules.NAME] "
            f"tables and, as metadata, {' and '.join(PRESET_METADATA)}"
        )
    for key in PRESET_METADATA:
        if key in values and not isinstance(values[key], str):
            raise ConfigError(f"preset file {origin!r}: {key!r} must be a name")
    rules = parse_rule_tables(values.get("rules", {}), f"preset file {origin!r}")
    return Presets(origin, rules, values.get("data"), values.get("model"))


def rule_values(
    shared: dict[str, Any],
    rule: str,
    preset: RuleSettings | None,
    override: RuleSettings | None,
    explicit: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str]]:
    """One rule's run settings (a mapping for make_config) and, per setting that is not the
    shared one, where it came from ("preset", "config" or "flag")."""
    values = dict(shared) | {"rule": rule}
    origins: dict[str, str] = {}
    options = dict(values.get("rule_options", {}))
    for origin, table in (("preset", preset), ("config", override)):
        if table is None:
            continue
        for key, value in table.settings.items():
            values[key] = value
            origins[key] = origin
        if table.options:
            options |= table.options
            origins["rule_options"] = origin
    for key, value in explicit.items():
        if key in values and values[key] != value and key in origins:
            origins[key] = "flag"
        values[key] = value
    values["rule_options"] = options
    return values, origins


def effective_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings of ``config`` that a rule's table can change, as recorded with results."""
    values = dataclasses.asdict(config)
    recorded = {key: values[key] for key in PER_RULE_KEYS}
    recorded["lr_milestones"] = list(config.lr_milestones)
    recorded["rule_options"] = dict(config.rule_options)
    return recorded
