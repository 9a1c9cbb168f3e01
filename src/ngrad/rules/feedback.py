"""Feedback pathways as typed containers, one vocabulary for every rule.

Every rule that sends signals down through its own weights calls them its *feedback matrices*
and returns them from ``feedback_matrices()``. Fixed random feedback lives in a
:class:`FeedbackBuffers` (buffers: saved in ``state_dict()``, moved by ``.to()``, never trained);
learned feedback lives in an ``nn.ParameterList`` (trained through ``.grad`` like any weight).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import Tensor, nn

from ngrad.nn.init import random_like

__all__ = ["FeedbackBuffers", "random_feedback"]


class FeedbackBuffers(nn.Module):
    """A list of fixed feedback tensors registered as buffers ``0, 1, ...`` (state-dict keys
    ``<attribute>.0``, ``<attribute>.1``, ...)."""

    def __init__(self, tensors: Iterable[Tensor] = ()) -> None:
        super().__init__()
        self._count = 0
        for tensor in tensors:
            self.append(tensor)

    def append(self, tensor: Tensor) -> None:
        self.register_buffer(str(self._count), tensor)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Tensor:
        if not -self._count <= index < self._count:
            raise IndexError(f"feedback index {index} out of range for {self._count} matrices")
        return getattr(self, str(index % self._count))

    def __iter__(self) -> Iterator[Tensor]:
        return (self[index] for index in range(self._count))

    def extra_repr(self) -> str:
        return ", ".join(str(tuple(tensor.shape)) for tensor in self)


def random_feedback(weights: Iterable[Tensor], init: str, scale: float = 1.0) -> FeedbackBuffers:
    """Fixed random matrices of each weight's shape, drawn with scheme ``init`` times ``scale``."""
    return FeedbackBuffers(random_like(weight.detach(), init, scale) for weight in weights)
