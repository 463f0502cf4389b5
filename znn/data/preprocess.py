"""Input preprocessing of whole image volumes (the .spec `pp_types`)."""
from __future__ import annotations

import numpy as np

__all__ = ["PP_TYPES", "none", "preprocess", "standard2D", "standard3D", "symetric_rescale",
           "symmetric_rescale"]


def _standardise(v, axes):
    mean = v.mean(axis=axes, keepdims=True)
    std = v.std(axis=axes, keepdims=True)  # population std (ddof=0), as the original
    # a constant slice/volume has std 0: the original divides by zero (NaN); we leave it at 0
    return (v - mean) / np.where(std == 0, 1.0, std)


def standard2D(volume: np.ndarray) -> np.ndarray:  # noqa: N802 (the .spec name)
    """(v - mean) / std for every z slice of a (Z,Y,X) volume (population std)."""
    v = np.asarray(volume, dtype=np.float64)
    return _standardise(v, axes=(-2, -1))


def standard3D(volume: np.ndarray) -> np.ndarray:  # noqa: N802
    """(v - mean) / std over the whole volume (population std)."""
    v = np.asarray(volume, dtype=np.float64)
    return _standardise(v, axes=None)


def symetric_rescale(volume: np.ndarray) -> np.ndarray:
    """Rescale linearly to [-1, 1]: v -= min; v /= max; 2v - 1 (a constant volume gives -1)."""
    v = np.asarray(volume, dtype=np.float64)
    v = v - v.min()
    top = v.max()
    if top > 0:
        v = v / top
    return 2.0 * v - 1.0


symmetric_rescale = symetric_rescale


def none(volume: np.ndarray) -> np.ndarray:
    """Unchanged (as float64)."""
    return np.asarray(volume, dtype=np.float64)


PP_TYPES = {"standard2D": standard2D, "standard3D": standard3D,
            "symetric_rescale": symetric_rescale, "symmetric_rescale": symmetric_rescale,
            "none": none}


def preprocess(volume: np.ndarray, pp_type: str, dtype="float32") -> np.ndarray:
    """Apply the named preprocessing (computed in float64) and cast to `dtype`."""
    key = "none" if pp_type.lower() == "none" else pp_type
    if key not in PP_TYPES:
        raise ValueError(f"unknown pp_type '{pp_type}' (use one of {', '.join(PP_TYPES)})")
    return np.ascontiguousarray(PP_TYPES[key](volume), dtype=dtype)
