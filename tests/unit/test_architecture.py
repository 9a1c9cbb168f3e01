"""The package's shape, asserted: no import cycle, rules never import upward, small modules, and
rules that keep no per-batch state on ``self``."""

import ast
from pathlib import Path

import pytest
import torch

import ngrad

PACKAGE = Path(ngrad.__file__).parent
# layers above the rules: a rule must never import from these
ABOVE_RULES = ("ngrad.analysis", "ngrad.train", "ngrad.plots", "ngrad.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ngrad_imports(path: Path) -> set[str]:
    """Every ngrad module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ngrad"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ngrad"))
    return found


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    """module -> the ngrad modules it imports (names that are not modules are dropped)."""
    return {name: _ngrad_imports(path) & MODULES.keys() for name, path in MODULES.items()}


def test_rules_never_import_from_the_layers_above_them():
    upward = {
        name: sorted(target for target in imports if target.startswith(ABOVE_RULES))
        for name, imports in _graph().items()
        if name.startswith(("ngrad.rules", "ngrad.nn", "ngrad.numeric", "ngrad.options"))
    }
    assert not {name: targets for name, targets in upward.items() if targets}


def test_no_import_cycle_between_modules():
    graph = _graph()
    for package in [name for name, path in MODULES.items() if path.name == "__init__.py"]:
        graph[package] = set()  # a package's re-exports are not a dependency of its modules
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles


def test_every_module_is_small():
    too_long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 410
    }
    assert not too_long


def _plain_state(rule):
    """The rule's own attributes that are not modules, parameters or buffers: which object each
    name holds (and the value of plain numbers and strings)."""
    plain = (int, float, str, bool, type(None))
    return {
        key: (id(value), value if isinstance(value, plain) else None)
        for key, value in vars(rule).items()
        if not key.startswith("_")
    }


@pytest.mark.parametrize("name", ngrad.available_rules())
def test_rules_keep_no_per_batch_state(name):
    torch.manual_seed(0)
    rule = ngrad.make_rule(name, ngrad.mlp([4, 4, 4, 4]))
    x, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    before = _plain_state(rule)
    rule.backward(x, y)
    rule.diagnose(x, y)
    after = _plain_state(rule)
    assert before.keys() == after.keys()
    assert before == after
