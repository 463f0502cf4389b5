"""Class-rebalancing weights (`rebalance_mode` none / global / patch)."""
from __future__ import annotations

import numpy as np

from znn.data.labels import affinity, affinity_mask

__all__ = ["REBALANCE_MODES", "class_weights", "global_class_weights", "rebalance_weights",
           "weight_map"]

REBALANCE_MODES = ("none", "global", "patch")


def class_weights(positive, mask=None, scheme: str = "v1") -> tuple[float, float]:
    """(w_pos, w_neg) from the counts of positive and negative voxels where mask > 0.

    scheme 'half' (boundary, global): w+ = 0.5 n / n+, w0 = 0.5 n / n0 (mean weight 1);
    scheme 'v1': w+ = n0 / n, w0 = n+ / n.  When a class is absent both weights are 1.
    """
    pos = np.asarray(positive) > 0
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask) > 0, pos.shape)
        n_pos = int(np.count_nonzero(pos & keep))
        n = int(np.count_nonzero(keep))
    else:
        n_pos, n = int(np.count_nonzero(pos)), pos.size
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return 1.0, 1.0
    if scheme == "half":
        return 0.5 * n / n_pos, 0.5 * n / n_neg
    if scheme == "v1":
        return n_neg / n, n_pos / n
    raise ValueError(f"unknown weighting scheme '{scheme}' (use 'half' or 'v1')")


def weight_map(positive, weights: tuple[float, float], dtype="float32") -> np.ndarray:
    """w+ where positive, w0 elsewhere."""
    return np.where(np.asarray(positive) > 0, weights[0], weights[1]).astype(dtype)


def global_class_weights(out_type: str, label, mask=None) -> list[tuple[float, float]]:
    """Per-channel weights of a whole label volume (Z,Y,X), computed once per volume.

    boundary: one 'half' pair from label > 0 (used for both channels);
    affinity: three 'v1' pairs (x, y, z) from the true affinities of the volume; the first
    voxel along each axis has no edge and is not counted.
    """
    label = np.asarray(label)
    if label.ndim == 4:
        label = label[0]
    if mask is not None:
        mask = np.asarray(mask)
        mask = mask[0] if mask.ndim == 4 else mask
    if out_type == "boundary":
        return [class_weights(label > 0, mask, "half")]
    if out_type == "affinity":
        pad = ((1, 0),) * 3  # a zero label / zero mask before the volume: no edge there
        aff = affinity(np.pad(label, pad), dtype=bool)
        ones = np.ones(label.shape, bool) if mask is None else mask > 0
        amask = affinity_mask(np.pad(ones, pad), dtype=bool)
        return [class_weights(aff[c], amask[c], "v1") for c in range(3)]
    raise ValueError(f"unknown out_type '{out_type}'")


def rebalance_weights(mode: str, out_type: str, labels, masks=None, global_weights=None,
                      dtype="float32") -> np.ndarray:
    """Weights (C,Z,Y,X) for a transformed label patch (boundary: 2 ch, affinity: 3 ch).

    mode 'none' gives ones; 'global' maps `global_weights` (from `global_class_weights`);
    'patch' computes 'v1' weights on this patch (per channel for affinity; from channel 0,
    i.e. label > 0, for boundary, tiled to both channels).  Only voxels with mask > 0 count.
    """
    labels = np.asarray(labels)
    if mode == "none":
        return np.ones(labels.shape, dtype)
    if mode not in REBALANCE_MODES:
        raise ValueError(f"unknown rebalance_mode '{mode}' (use none, global or patch)")
    masks = None if masks is None else np.broadcast_to(np.asarray(masks), labels.shape)
    channels = [0] if out_type == "boundary" else list(range(labels.shape[0]))
    out = np.empty(labels.shape, dtype)
    for c in channels:
        positive = labels[c] > 0.5
        if mode == "global":
            if global_weights is None:
                raise ValueError("global rebalancing needs the volume's global_weights")
            pair = global_weights[c]
        else:
            pair = class_weights(positive, None if masks is None else masks[c], "v1")
        out[c] = weight_map(positive, pair, dtype)
    if out_type == "boundary":
        out[1:] = out[0]
    return out
