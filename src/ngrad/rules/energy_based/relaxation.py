"""The relaxation of a layered Hopfield network (EP, CHL): s_l <- f_l(u_l), step by step.

The energy, its fixed points and the two schedules are described in ``energy.py``; this module
runs them. Per step, each coupling between relaxed layers costs one product in each direction:
u_l = W_l s_{l-1} + b_l (bottom-up, which also reads a pooled layer's switches) and
gamma W_{l+1}^T s_{l+1} (top-down, through those switches); the input's drive W_1 x + b_1 is
computed once per batch by the caller. Every update writes a fresh tensor (the activation is
applied in place to the drive the relaxation owns), so the states handed in are never changed.

A phase runs at most a given number of steps and stops earlier once it has settled: once no state
of any sample moved by more than a tolerance in the last step. Its residual, max |s^t - s^{t-1}|
of the last step, is the violation of the fixed-point equation at the state before that step.

Groups: the batch may hold ``groups`` equal blocks of samples (EP's two nudged phases stacked
when they run every step: they share the input's drive and run as one batch of twice the size,
one product where there were two). Each block stops on its own: once it has settled its states
are held where they are (restored after each further step), so a block's result is the one it
would have reached alone. The stop is decided on the device; the host reads it every step on
the CPU (where that waits for nothing) and every ``SETTLE_CHECK_EVERY`` steps elsewhere, which
changes no result (a settled block stays put) but saves a wait for the device at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.activations import LEAKY_RELU_SLOPE, Activation
from ngrad.nn.layers import DenseLayer, Layer
from ngrad.nn.network import Network

__all__ = [
    "SETTLE_CHECK_EVERY",
    "Relaxation",
    "TopUpdate",
    "add_top_down",
    "in_place",
    "is_pooled",
    "largest_change",
    "relax",
    "relax_groups",
]

TopUpdate = Callable[[Tensor, Tensor], Tensor]  # (drive u_M, current s_M) -> new s_M; the drive
#     is the relaxation's own tensor: the update may overwrite it
SETTLE_CHECK_EVERY = 16  # steps between the host's looks at the stop off the CPU


def add_top_down(
    drive: Tensor,
    layer_above: Layer,
    above: Tensor,
    strength: float,
    in_place: bool,
    switches: Tensor | None = None,
) -> Tensor:
    """drive + strength W_{l+1}^T s_{l+1}; ``in_place`` only where ``drive`` is a fresh tensor.
    A pooled layer above sends it back through ``switches``, its pooling's at s_l."""
    if isinstance(layer_above, DenseLayer) and drive.dim() == 2:
        if in_place:
            return drive.addmm_(above, layer_above.weight, alpha=strength)
        return torch.addmm(drive, above, layer_above.weight, alpha=strength)
    back = layer_above.transpose(above, layer_above.weight, drive.shape, switches=switches)
    if in_place:
        return drive.add_(back, alpha=strength)
    return drive.add(back, alpha=strength)


def is_pooled(layer: Layer) -> bool:
    """Whether ``layer`` max-pools (its linear map depends on where the maxima sit)."""
    return getattr(layer, "pool", 1) > 1


@dataclass(frozen=True)
class Relaxation:
    """States s_1..s_M after ``steps_used`` steps. ``residual``: the largest |s^t - s^{t-1}| of
    the last step; ``settled_fraction``: the fraction of samples whose own largest change in that
    step was within the phase's tolerance (those the tolerance counts as settled)."""

    states: list[Tensor]
    residual: float
    steps_used: int
    settled_fraction: float


@torch.no_grad()
def relax(
    network: Network,
    input_drive: Tensor,
    states: Sequence[Tensor],
    steps: int,
    top_update: TopUpdate | None,
    feedback_strength: float = 1.0,
    schedule: str = "alternating",
    tolerance: float = 0.0,
) -> Relaxation:
    """Run at most ``steps`` steps of s_l <- f_l(u_l) (the top layer through ``top_update``, or
    held where it is None: clamped) from ``states``; ``input_drive`` = W_1 x + b_1 is computed once
    per batch by the caller. With a positive ``tolerance`` it stops once no state moved by more
    in a step; with 0 it runs every step."""
    return relax_groups(
        network, input_drive, states, steps, top_update, feedback_strength, schedule, tolerance
    )[0]


@torch.no_grad()
def relax_groups(
    network: Network,
    input_drive: Tensor,
    states: Sequence[Tensor],
    steps: int,
    top_update: TopUpdate | None,
    feedback_strength: float = 1.0,
    schedule: str = "alternating",
    tolerance: float = 0.0,
    groups: int = 1,
    check_every: int | None = None,
) -> list[Relaxation]:
    """:func:`relax` of a batch of ``groups`` equal blocks of samples, each stopping on its own
    (the module's docstring); one Relaxation per block. ``check_every``: steps between the host's
    reads of the stop (default: 1 on the CPU, ``SETTLE_CHECK_EVERY`` elsewhere)."""
    if not states or steps < 1:
        blocks = [[state.chunk(groups)[group] for state in states] for group in range(groups)]
        return [_result(block, None, 0, 0.0) for block in blocks]
    top = len(states) - 1
    order = _order(top + 1, schedule)
    if top_update is None:
        order = [index for index in order if index != top]
    current, layers = list(states), list(network.layers)[: top + 1]
    advance = _steps(layers, input_drive, current, order, schedule, top_update, feedback_strength)
    if check_every is None:
        check_every = 1 if input_drive.device.type == "cpu" else SETTLE_CHECK_EVERY
    stop = _Stop(groups, tolerance, check_every, input_drive.device) if tolerance > 0 else None
    for step in range(steps):
        previous, current = current, advance(current)
        if stop is not None:
            current, settled = stop.step(step, current, previous)
            if settled:
                break
        elif step == steps - 1:
            change = largest_change(current, previous)
            last = change.chunk(groups) if groups > 1 else [change]
    if stop is not None:
        used, last = stop.outcome()
    else:
        used = [steps] * groups
    blocks = [current]
    if groups > 1:
        blocks = [[state.chunk(groups)[group] for state in current] for group in range(groups)]
    return [
        _result(block, change, count, tolerance)
        for block, change, count in zip(blocks, last, used, strict=True)
    ]


Advance = Callable[[list[Tensor]], list[Tensor]]  # one step: the states after it


def _steps(
    layers: list[Layer],
    input_drive: Tensor,
    states: list[Tensor],
    order: list[int],
    schedule: str,
    top_update: TopUpdate | None,
    strength: float,
) -> Advance:
    """The step of a phase: the states after it from those before (a new list)."""
    top, batch = len(layers) - 1, input_drive.shape[0]
    # bind each layer's pieces once per phase: a step runs them
    ascend = [None, *(_bottom_up_of(layer, batch) for layer in layers[1:])]
    descend = [_top_down_of(layer, strength) for layer in layers[1:]]
    functions = [in_place(layer.activation) for layer in layers[:top]]
    # switches[l]: where layer l's pooling takes its maxima at its input s_{l-1} (None: unpooled);
    # a layer's bottom-up product refreshes them, and they stay right for the top-down pass
    # because each layer is updated between two updates of the layer below it
    pooled = [index > 0 and is_pooled(layer) for index, layer in enumerate(layers)]
    switches = [
        layers[index].switches(states[index - 1]) if pooled[index] else None
        for index in range(top + 1)
    ]
    held_pooled_top = top_update is None and pooled[top]

    def from_below(index: int, current: list[Tensor]) -> Tensor:
        if index == 0:  # the top update may overwrite its drive: it gets a copy of the input's
            return input_drive.clone() if top == 0 else input_drive
        drive, switches[index] = ascend[index](current[index - 1])
        return drive

    def finish(index: int, drive: Tensor, current: list[Tensor]) -> Tensor:
        if index < top:  # the top-down sum is a fresh tensor: f may overwrite it
            drive = descend[index](drive, current[index + 1], index > 0, switches[index + 1])
            return functions[index](drive)
        return top_update(drive, current[index])

    def advance(current: list[Tensor]) -> list[Tensor]:
        if schedule == "synchronous":
            drives = {index: from_below(index, current) for index in order}  # from the old state
            current = [
                finish(i, drives[i], current) if i in drives else current[i] for i in range(top + 1)
            ]
            if held_pooled_top:
                switches[top] = layers[top].switches(current[top - 1])
            return current
        current = list(current)
        for index in order:
            current[index] = finish(index, from_below(index, current), current)
            if held_pooled_top and index == top - 1:
                switches[top] = layers[top].switches(current[index])
        return current

    return advance


class _Stop:
    """Which blocks of the batch have settled (their largest change within ``tolerance``), the
    steps each used and the per-sample changes of its last one. On the host (``check_every``
    1) in Python numbers; on the device in tensors the host reads every ``check_every`` steps."""

    def __init__(self, groups: int, tolerance: float, check_every: int, device) -> None:
        self.groups, self.tolerance, self.check_every = groups, tolerance, check_every
        self.on_host = check_every == 1
        if self.on_host:
            self.done, self.used = [False] * groups, [0] * groups
            self.last: list[Tensor | None] = [None] * groups
        else:
            self.done_all = torch.zeros(groups, dtype=torch.bool, device=device)
            self.used_all = torch.zeros(groups, dtype=torch.long, device=device)
            self.largest: Tensor | None = None

    def step(
        self, step: int, current: list[Tensor], previous: list[Tensor]
    ) -> tuple[list[Tensor], bool]:
        """The states after a step (settled blocks held) and whether every block has settled."""
        groups, tolerance = self.groups, self.tolerance
        if self.on_host:
            if any(self.done):  # settled blocks stay where they were
                current = _hold(current, previous, torch.tensor(self.done), groups)
            change = largest_change(current, previous).view(groups, -1)
            maxima = change.amax(1).tolist() if groups > 1 else [float(change.max())]
            for group in range(groups):
                if not self.done[group]:
                    self.used[group] += 1
                    self.last[group] = change[group]
                    self.done[group] = maxima[group] <= tolerance
            return current, all(self.done)
        done = self.done_all
        current = _hold(current, previous, done, groups)
        change = largest_change(current, previous)
        rows = done.repeat_interleave(change.shape[0] // groups)
        self.largest = change if self.largest is None else torch.where(rows, self.largest, change)
        self.used_all += ~done
        done |= change.view(groups, -1).amax(1) <= tolerance
        return current, (step + 1) % self.check_every == 0 and bool(done.all())

    def outcome(self) -> tuple[list[int], list[Tensor]]:
        if self.on_host:
            return self.used, self.last
        return self.used_all.tolist(), list(self.largest.chunk(self.groups))


def _result(
    states: list[Tensor], largest: Tensor | None, used: int, tolerance: float
) -> Relaxation:
    """A block's Relaxation (``largest``: its per-sample changes in its last step)."""
    if largest is None:
        return Relaxation(states, float("inf"), used, 0.0)
    settled = float((largest <= tolerance).sum()) / largest.numel()
    return Relaxation(states, float(largest.max()), used, settled)


def _hold(current: list[Tensor], previous: list[Tensor], done: Tensor, groups: int) -> list[Tensor]:
    """``previous`` in the blocks that are ``done`` (a boolean per block), ``current`` elsewhere."""
    rows = done.to(current[0].device).repeat_interleave(current[0].shape[0] // groups)
    held = []
    for new, old in zip(current, previous, strict=True):
        where = rows.view(-1, *([1] * (new.dim() - 1)))
        held.append(new if new is old else torch.where(where, old, new))
    return held


def largest_change(new: Sequence[Tensor], old: Sequence[Tensor]) -> Tensor:
    """max |new - old| over the units of every layer, per sample (held layers moved by 0)."""
    change = None
    for after, before in zip(new, old, strict=True):
        if after is not before:
            moved = (after - before).abs_().flatten(1).amax(1)
            change = moved if change is None else torch.maximum(change, moved, out=change)
    if change is None:
        return torch.zeros(new[0].shape[0], dtype=new[0].dtype, device=new[0].device)
    return change


# Activations applied in place to a drive the relaxation owns (one allocation less per update).
_IN_PLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid_,
    "tanh": torch.tanh_,
    "relu": torch.relu_,
    "identity": lambda drive: drive,
    "leaky_relu": lambda drive: torch.nn.functional.leaky_relu_(drive, LEAKY_RELU_SLOPE),
    "hard_sigmoid": lambda drive: drive.mul_(0.5).clamp_(0.0, 1.0),
}


def in_place(activation: Activation) -> Callable[[Tensor], Tensor]:
    """f applied in place where ngrad knows how (same values as ``activation``), else f."""
    return _IN_PLACE.get(activation.name, activation.function)


def _bottom_up_of(layer: Layer, batch: int) -> Callable[[Tensor], tuple[Tensor, Tensor | None]]:
    """W_l s_{l-1} + b_l and the switches of its pooling (None without). A dense layer narrower
    than the batch computes its transpose, W_l S^T + b_l 1^T (the same sums; BLAS runs this
    shape up to 1.6x faster for the 10 outputs of an MNIST net), copied back to rows."""
    if isinstance(layer, DenseLayer) and layer.bias is not None:
        weight = layer.weight
        if layer.out_features < batch:
            bias = layer.bias[:, None].expand(-1, batch)
            return lambda below: (
                torch.addmm(bias, weight, below.flatten(1).t()).t().contiguous(),
                None,
            )
        weight_t = weight.t()
        return lambda below: (torch.addmm(layer.bias, below.flatten(1), weight_t), None)
    return layer.pre_activation_and_switches


TopDown = Callable[[Tensor, Tensor, bool, Tensor | None], Tensor]


def _top_down_of(layer_above: Layer, strength: float) -> TopDown:
    if isinstance(layer_above, DenseLayer):
        weight = layer_above.weight

        def dense(drive: Tensor, above: Tensor, in_place: bool, _switches: Tensor | None) -> Tensor:
            if drive.dim() != 2:
                return add_top_down(drive, layer_above, above, strength, in_place)
            if in_place:
                return drive.addmm_(above, weight, alpha=strength)
            return torch.addmm(drive, above, weight, alpha=strength)

        return dense

    def convolutional(
        drive: Tensor, above: Tensor, in_place: bool, switches: Tensor | None
    ) -> Tensor:
        return add_top_down(drive, layer_above, above, strength, in_place, switches)

    return convolutional


def _order(count: int, schedule: str) -> list[int]:
    if schedule == "synchronous":
        return list(range(count))
    if schedule == "alternating":
        return [*range(0, count, 2), *range(1, count, 2)]
    raise ValueError(f"unknown schedule {schedule!r}; choose alternating or synchronous")
