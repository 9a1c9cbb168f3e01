"""ngrad: brain-plausible credit assignment (NGRADs) behind one PyTorch API.

net = ngrad.mlp([64, 128, 10], activation="tanh")
rule = ngrad.make_rule("fa", net)
optimiser = torch.optim.SGD(rule.parameters(), lr=0.1)
record = rule.backward(x, y)   # writes the rule's update into .grad
optimiser.step()

Package layout: ``ngrad.nn`` (what a rule sees of a model), ``ngrad.rules`` (the registry and one
folder per rule family), ``ngrad.train``, ``ngrad.analysis``, ``ngrad.plots``, ``ngrad.data`` and
``ngrad.cli``. The names below are imported on first use, so ``import ngrad`` (and ``ngrad
--help``) stays cheap until a model or rule is needed.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: `ngrad` starts up faster

__version__ = "0.1.0"

# public name -> module that defines it (a module itself when the name is a submodule)
_EXPORTS = {
    "ConfigError": "ngrad.errors",
    "DivergenceError": "ngrad.errors",
    "NgradError": "ngrad.errors",
    "Conv2dLayer": "ngrad.nn",
    "DenseLayer": "ngrad.nn",
    "Layer": "ngrad.nn",
    "Network": "ngrad.nn",
    "convnet": "ngrad.nn",
    "mlp": "ngrad.nn",
    "LearningRule": "ngrad.rules",
    "StepRecord": "ngrad.rules",
    "available_rules": "ngrad.rules",
    "make_rule": "ngrad.rules",
}
_SUBMODULES = {
    "diagnostics": "ngrad.analysis.diagnostics",
    "similarity": "ngrad.analysis.similarity",
    "models": "ngrad.models",
}

__all__ = [
    "ConfigError",
    "Conv2dLayer",
    "DenseLayer",
    "DivergenceError",
    "Layer",
    "LearningRule",
    "Network",
    "NgradError",
    "StepRecord",
    "__version__",
    "available_rules",
    "convnet",
    "diagnostics",
    "make_rule",
    "mlp",
    "models",
    "similarity",
]

if TYPE_CHECKING:
    from typing import Any

    from ngrad import models
    from ngrad.analysis import diagnostics, similarity
    from ngrad.errors import ConfigError, DivergenceError, NgradError
    from ngrad.nn import Conv2dLayer, DenseLayer, Layer, Network, convnet, mlp
    from ngrad.rules import LearningRule, StepRecord, available_rules, make_rule


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'ngrad' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
