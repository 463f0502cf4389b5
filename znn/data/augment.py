"""Data augmentation: the 16 flips/transposes of the (z, y, x) axes, applied identically."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Transform", "all_transforms", "apply_transform", "inverse", "invert_transform",
           "random_transform"]


@dataclass(frozen=True)
class Transform:
    """Flip z, flip y, flip x (in that order), then transpose y<->x."""

    flip_z: bool = False
    flip_y: bool = False
    flip_x: bool = False
    transpose: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.flip_z or self.flip_y or self.flip_x or self.transpose)


def random_transform(rng: np.random.Generator) -> Transform:
    """Four independent fair coin flips (the original's `np.random.rand(4) > 0.5`)."""
    return Transform(*(bool(b) for b in rng.random(4) > 0.5))


def all_transforms() -> list[Transform]:
    """The 16 transforms (identity first), e.g. for test-time augmentation."""
    return [Transform(*flags) for flags in itertools.product((False, True), repeat=4)]


def inverse(t: Transform) -> Transform:
    """The transform that undoes `t` (flips commute; a transpose swaps the y and x flips)."""
    if t.transpose:
        return Transform(t.flip_z, t.flip_x, t.flip_y, True)
    return t


def _apply_one(arr, t):
    arr = np.asarray(arr)
    if arr.ndim < 3:
        raise ValueError(f"expected an array with (z, y, x) last axes, got shape {arr.shape}")
    if t.flip_z:
        arr = np.flip(arr, -3)
    if t.flip_y:
        arr = np.flip(arr, -2)
    if t.flip_x:
        arr = np.flip(arr, -1)
    if t.transpose:
        arr = np.swapaxes(arr, -1, -2)
    return np.array(arr, order="C")  # always a copy


def apply_transform(arrays, t: Transform) -> list[np.ndarray]:
    """Apply `t` to the last three axes of every array; returns C-contiguous copies."""
    return [_apply_one(a, t) for a in arrays]


def invert_transform(arrays, t: Transform) -> list[np.ndarray]:
    """Undo `apply_transform(arrays, t)`."""
    return apply_transform(arrays, inverse(t))
