"""Label transforms: raw label patches to boundary / affinity targets, and their masks."""
from __future__ import annotations

import numpy as np

__all__ = ["affinity", "affinity_mask", "binary_class", "boundary", "boundary_mask",
           "mask_binary", "one_class"]


def _squeeze(label):
    """Accept (Z,Y,X) or (1,Z,Y,X)."""
    label = np.asarray(label)
    if label.ndim == 4:
        if label.shape[0] != 1:
            raise ValueError(f"a label must have one channel, got shape {label.shape}")
        label = label[0]
    if label.ndim != 3:
        raise ValueError(f"a label must be (Z,Y,X) or (1,Z,Y,X), got shape {label.shape}")
    return label


def one_class(label, dtype="float32") -> np.ndarray:
    """One channel: label > 0."""
    return (_squeeze(label) > 0)[np.newaxis].astype(dtype)


def boundary(label, dtype="float32") -> np.ndarray:
    """Two channels: ch0 = label > 0, ch1 = 1 - ch0 (the original's `_binary_class`)."""
    on = _squeeze(label) > 0
    return np.stack([on, ~on]).astype(dtype)


binary_class = boundary


def mask_binary(mask, dtype="float32") -> np.ndarray:
    """(1,Z,Y,X): mask > 0."""
    return (_squeeze(mask) > 0)[np.newaxis].astype(dtype)


def boundary_mask(mask, dtype="float32") -> np.ndarray:
    """The mask tiled to the two boundary channels."""
    m = _squeeze(mask) > 0
    return np.stack([m, m]).astype(dtype)


def affinity(label_ext, dtype="float32") -> np.ndarray:
    """Affinities (3,Z,Y,X), channel order x, y, z, from a label one voxel larger at the
    low end of every axis: aff = (L[v] == L[v - e_axis]) & (L[v] > 0), stored at v.
    """
    lab = _squeeze(label_ext)
    core = lab[1:, 1:, 1:]
    on = core > 0
    x = (core == lab[1:, 1:, :-1]) & on
    y = (core == lab[1:, :-1, 1:]) & on
    z = (core == lab[:-1, 1:, 1:]) & on
    return np.stack([x, y, z]).astype(dtype)


def affinity_mask(mask_ext, dtype="float32") -> np.ndarray:
    """Affinity masks (3,Z,Y,X) from a mask one voxel larger at the low end.

    An edge counts only when BOTH of its voxels are unmasked (mask > 0).  The original
    used OR (§8.13), which trains on edges that touch a masked-out voxel; AND is the intent
    of a mask.
    """
    m = _squeeze(mask_ext) > 0
    core = m[1:, 1:, 1:]
    return np.stack([core & m[1:, 1:, :-1], core & m[1:, :-1, 1:],
                     core & m[:-1, 1:, 1:]]).astype(dtype)
