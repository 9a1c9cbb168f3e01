"""The ``ngrad`` parser and entry point: one subcommand per module of :mod:`ngrad.cli`.

Only the command being run has its flags built, and each command imports torch, the registry and
the data catalogue inside its own functions, so ``ngrad --help`` and ``ngrad --version`` answer
without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ngrad.errors import ConfigError, NgradError

__all__ = ["COMMANDS", "EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main"]

EXIT_USAGE, EXIT_FAILURE = 2, 1

# What to tell a user who pressed Ctrl-C, per command (nothing where there is nothing to resume).
INTERRUPTED_HINTS = {
    "train": "; resume with `ngrad train --resume DIR`",
    "similarity": "; its outputs are written only once everything is computed: run it again",
    "tune": "; run the same command again: it resumes from its storage",
}


class Parser(argparse.ArgumentParser):
    """argparse's own usage errors become one ``ngrad: error:`` line and exit code 2."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help and the module that defines its flags
    (``add_arguments(parser)``) and runs it (``run(args) -> exit code``)."""

    help: str
    module: str
    data_parallel: bool = False  # runs under torchrun with several processes (one per rank)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        importlib.import_module(self.module).add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        return importlib.import_module(self.module).run(args)


COMMANDS: dict[str, Command] = {
    "list": Command(
        "rules, models and datasets; `ngrad list --rule NAME` / `--model NAME`: its options",
        "ngrad.cli.listing",
    ),
    "train": Command("train one rule", "ngrad.cli.train", data_parallel=True),
    "compare": Command("train several rules and tabulate them", "ngrad.cli.compare"),
    "check": Command("run the rules' reference properties", "ngrad.cli.check"),
    "inspect": Command("one neuron's compartments, forward vs teaching", "ngrad.cli.inspect"),
    "similarity": Command(
        "representational similarity to a reference rule; neural predictivity",
        "ngrad.cli.similarity",
    ),
    "tune": Command("search rules' settings on an equal trial budget (Optuna)", "ngrad.cli.tune"),
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ngrad`` parser; only the flags of ``commands`` are built (default: every command's,
    which imports torch)."""
    from ngrad import __version__

    parser = Parser(
        prog="ngrad",
        description="Brain-plausible learning rules, measured against backprop.",
        epilog="`ngrad COMMAND --help` shows a command's flags; `ngrad list` names the rules, "
        "models and datasets, and `ngrad list --rule NAME` (`--model NAME`) its options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"ngrad {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.help)
        if commands is None or name in commands:
            command.add_arguments(subparser)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv``: its first word (the top level has no option taking a value)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _check_processes(name: str) -> None:
    """ConfigError for a command that cannot share its work among the processes torchrun
    started (``WORLD_SIZE`` > 1): only ``ngrad train`` trains data-parallel."""
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if processes > 1 and not COMMANDS[name].data_parallel:
        raise ConfigError(
            f"`ngrad {name}` runs in one process, and torchrun started {processes}: only `ngrad "
            f"train` trains data-parallel (`torchrun --nproc-per-node N -m ngrad train ...`, one "
            f"run at a time); run `ngrad {name}` without torchrun"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ngrad`` with ``argv`` (default: the process's arguments); returns the exit code.

    Every failure a user can cause ends in one line ``ngrad: error: ...``: exit code 2 for usage
    (unknown rule or dataset, bad option or config key), 1 for run failures (missing or corrupt
    data, unwritable output, divergence). What was computed before a failure stays on disk.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        name = _command_named(argv)
        parser = build_parser([name] if name else [])
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version print, then exit 0
            return done.code if isinstance(done.code, int) else 0
        _check_processes(args.command)
        return COMMANDS[args.command].run(args)
    except ConfigError as error:
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NgradError as error:  # data, divergence and other run failures
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as error:  # a run's own message says how to continue it
        hint = f"; {error}" if str(error) else INTERRUPTED_HINTS.get(_command_named(argv) or "", "")
        print(f"ngrad: interrupted{hint}", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("NGRAD_DEBUG"):
            raise
        print(
            f"ngrad: error: internal error ({type(error).__name__}: {error}); "
            "rerun with NGRAD_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILURE
