"""ngrad: brain-plausible credit assignment (NGRADs) behind one PyTorch API.

net = ngrad.mlp([64, 128, 10], activation="tanh")
rule = ngrad.make_rule("fa", net)
optimiser = torch.optim.SGD(rule.parameters(), lr=0.1)
record = rule.backward(x, y)   # writes the rule's update into .grad
optimiser.step()
"""

from ngrad import diagnostics
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.network import Conv2dLayer, DenseLayer, Layer, Network, convnet, mlp
from ngrad.rules import LearningRule, StepRecord, available_rules, make_rule

__version__ = "0.1.0"

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
]
