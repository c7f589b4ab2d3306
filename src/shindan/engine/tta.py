"""Test-time augmentation: average a network's logits over flipped / transposed views.

Each view is its own inverse, so spatial outputs (segmentation logits) are mapped back by
applying the same view again. Works on numpy arrays and torch tensors laid out (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from shindan.errors import ModelError

if TYPE_CHECKING:  # torch tensors work too, without importing torch for numpy input
    import torch

T = TypeVar("T", np.ndarray, "torch.Tensor")

VIEWS = ("hflip", "vflip", "rot180", "transpose")


def _flip(x: T, axes: tuple[int, ...]) -> T:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.flip(x, axes))
    import torch

    return torch.flip(x, axes)


def _transpose(x: T) -> T:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.swapaxes(x, -1, -2))
    return x.transpose(-1, -2).contiguous()


_APPLY: dict[str, Callable] = {
    "hflip": lambda x: _flip(x, (-1,)),
    "vflip": lambda x: _flip(x, (-2,)),
    "rot180": lambda x: _flip(x, (-2, -1)),
    "transpose": _transpose,
}


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """``views`` as a tuple, each one of :data:`VIEWS` (else a ModelError)."""
    bad = [v for v in views if v not in _APPLY]
    if bad:
        raise ModelError(f"unknown test-time view(s) {bad} (choose from {', '.join(VIEWS)})")
    return tuple(views)


def tta_logits(forward: Callable[[T], T], x: T, views: Sequence[str]) -> T:
    """Mean of ``forward`` over ``x`` and each view of it (NCHW), views undone on spatial
    (N, C, H, W) outputs.

    Examples
    --------
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    >>> bool((tta_logits(lambda z: z * 2, x, ["hflip", "transpose"]) == x * 2).all())
    True
    """
    out = forward(x)
    if not views:
        return out
    for v in check_views(views):
        f = _APPLY[v]
        y = forward(f(x))
        out = out + (f(y) if y.ndim == 4 else y)
    return out / (1 + len(views))
