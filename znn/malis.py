"""MALIS weights, rand error and the MALIS helpers used by training (ZNN's "zalis")."""
import numpy as np

from znn._core import _malis

__all__ = [
    "NORM_TYPES",
    "affinities_from_segmentation",
    "malis_cost",
    "malis_gradient_weights",
    "malis_weights",
    "rand_error",
    "rand_stats",
    "segment_from_affinities",
]

#: Accepted values of ``malis_norm_type``.
NORM_TYPES = ("none", "frac", "num", "pair")

# Probabilities are clipped to [_EPS, 1 - _EPS] before the logarithms of the MALIS energy.
_EPS = 1e-7


def _affs(a, name, like=None):
    """Validated C-contiguous float32/float64 (3, Z, Y, X) copy-or-view of `a`."""
    a = np.asarray(a)
    if like is not None:
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a real (bool, integer or float) array, "
                             f"got dtype {a.dtype}")
        dtype = like.dtype
    else:
        if a.dtype.kind != "f":
            raise ValueError(f"{name} must be a float array, got dtype {a.dtype}")
        dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, Z, Y, X) (channels x, y, z), "
                         f"got {a.shape}")
    if min(a.shape) < 1:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if like is not None and a.shape != like.shape:
        raise ValueError(f"{name} has shape {a.shape}, which does not match affs {like.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def segment_from_affinities(true_affs):
    """True segmentation of an affinity graph (§5.1 of the reference).

    Parameters
    ----------
    true_affs : array (3, Z, Y, X)
        Channel 0 = x (last axis), 1 = y, 2 = z; the value at a voxel links it with its
        predecessor along that axis.  Edges with value > 0.5 connect.

    Returns
    -------
    seg : int64 array (Z, Y, X)
        Connected components numbered 1, 2, ... in raster order of their first voxel;
        components of a single voxel get 0 (boundary).
    """
    t = _affs(true_affs, "true_affs")
    seg, _, _ = _malis.segment(t)
    return seg


def affinities_from_segmentation(seg, dtype=np.float32):
    """Affinity graph (3, Z, Y, X) of a segmentation (Z, Y, X) or (Y, X), as §4.5.

    aff[c] at voxel v is 1 when seg[v] == seg[predecessor of v along axis c] and seg[v] > 0;
    channel 0 = x (last axis), 1 = y, 2 = z; voxels without a predecessor get 0.
    """
    seg = np.asarray(seg)
    if seg.dtype.kind not in "biu":
        raise ValueError(f"seg must be an integer array, got dtype {seg.dtype}")
    if seg.ndim == 2:
        seg = seg[None]
    if seg.ndim != 3:
        raise ValueError(f"seg must have shape (Z, Y, X) or (Y, X), got {seg.shape}")
    aff = np.zeros((3,) + seg.shape, dtype=dtype)
    inside = seg > 0
    aff[0][:, :, 1:] = (seg[:, :, 1:] == seg[:, :, :-1]) & inside[:, :, 1:]
    aff[1][:, 1:, :] = (seg[:, 1:, :] == seg[:, :-1, :]) & inside[:, 1:, :]
    aff[2][1:, :, :] = (seg[1:, :, :] == seg[:-1, :, :]) & inside[1:, :, :]
    return aff


def _run(affs, seg, nseg, high, low, frac_norm, want_weights=True):
    return _malis.weights(affs, seg, nseg, float(high), float(low), bool(frac_norm),
                          want_weights)


def _segment(true_affs, affs):
    t = _affs(true_affs, "true_affs", like=affs)
    seg, nseg, _ = _malis.segment(t)
    return t, seg, nseg


def malis_weights(affs, true_affs, *, high=1.0, low=0.0, frac_norm=False):
    """MALIS merger and splitter weights of an affinity graph (zalis, §5.2 of the reference).

    Kruskal's maximum spanning forest over the edges a = min(aff, high) with a > low, visited
    by descending a; ties go to the edge whose predecessor voxel has the larger raster index,
    then z before y before x (the original's order).  Each edge receives the number of
    labelled voxel pairs whose maximin edge it is.

    Parameters
    ----------
    affs : float array (3, Z, Y, X)
        Predicted affinities, channels x, y, z.  Z = 1 is a 2D graph (channel 2 unused).
    true_affs : array (3, Z, Y, X)
        True affinities; the true segmentation is :func:`segment_from_affinities`.
    high, low : float
        Clipping: a = min(aff, high); edges with a <= low (or NaN) are left out.
    frac_norm : bool
        Divide each segment's voxel counts by the segment size before pairing.

    Returns
    -------
    merger, splitter : float64 arrays shaped like affs
        Different-segment (merger) and same-segment (splitter) pair counts per edge.
    stats : dict
        ``rand_error`` = (fp + fn) / (n (n - 1) / 2) (0 when n <= 1), ``n`` = labelled voxels,
        and the pair confusion counts ``tp``, ``tn``, ``fp``, ``fn`` (a < 0.5 splits a
        same-segment pair, a > 0.5 merges a different-segment pair).
    """
    a = _affs(affs, "affs")
    _, seg, nseg = _segment(true_affs, a)
    return _run(a, seg, nseg, high, low, frac_norm)


def rand_stats(affs, true_affs):
    """Pair confusion counts and rand error over all edges (no clipping, no normalisation).

    Returns the ``stats`` dict of :func:`malis_weights`; see :func:`rand_error`.
    """
    a = _affs(affs, "affs")
    _, seg, nseg = _segment(true_affs, a)
    _, _, stats = _run(a, seg, nseg, np.inf, -np.inf, False, want_weights=False)
    return stats


def rand_error(affs, true_affs):
    """Rand error of an affinity graph against true affinities (get_rand_error, §5.4).

    (FP + FN) / (N (N - 1) / 2) over the maximum spanning forest of all edges; 0.0 when fewer
    than two voxels are labelled.
    """
    return rand_stats(affs, true_affs)["rand_error"]


def _check_norm(norm_type):
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {', '.join(NORM_TYPES)}, "
                         f"got {norm_type!r}")


def malis_gradient_weights(props, true_affs, norm_type="none", constrained=False):
    """Per-edge MALIS weights that multiply the affinity gradient during training (§5.3).

    Plain: w = merger + splitter of one pass with high = 1, low = 0 (fraction counts when
    norm_type is ``"frac"``).  Constrained: a merger pass on props set to 1 wherever the true
    affinity is > 0 (high 1, low 0.5), its merger weights divided by that pass's FP + TN, plus
    a splitter pass on props set to 0 wherever the true affinity is 0 (high 0.5, low 0), its
    splitter weights divided by TP + FN.  Then ``"num"`` divides w by N and ``"pair"`` by
    N (N - 1).  Zero denominators leave the (then all-zero) weights unchanged.

    Parameters
    ----------
    props : float array (3, Z, Y, X)
        Network output (affinities x, y, z).
    true_affs : array (3, Z, Y, X)
        Label affinities.
    norm_type : {"none", "frac", "num", "pair"}
    constrained : bool
        ``is_constrained_malis``.

    Returns
    -------
    w : array like props (props' dtype)
    stats : dict
        ``rand_error`` and ``n`` (labelled voxels; the original skips the update when n <= 1).
        Plain mode adds ``tp``, ``tn``, ``fp``, ``fn``; constrained mode adds the dicts
        ``merger_pass`` and ``splitter_pass`` and its rand error is
        (FP_m + FN_s) / (TP_m + TN_m + FP_m + FN_m).
    """
    p = np.asarray(props)
    if p.ndim == 4 and p.shape[0] != 3:
        raise ValueError(f"MALIS needs an affinity output with 3 channels (x, y, z); props has "
                         f"{p.shape[0]} channels (boundary-map outputs are not supported with "
                         f"is_malis)")
    _check_norm(norm_type)
    p = _affs(p, "props")
    t, seg, nseg = _segment(true_affs, p)
    frac = norm_type == "frac"
    if not constrained:
        merger, splitter, stats = _run(p, seg, nseg, 1.0, 0.0, frac)
        w = merger
        w += splitter
    else:
        pm = p.copy()
        pm[t > 0] = 1
        merger, _, st_m = _run(pm, seg, nseg, 1.0, 0.5, frac)
        ps = p.copy()
        ps[t == 0] = 0
        _, splitter, st_s = _run(ps, seg, nseg, 0.5, 0.0, frac)
        den_m = st_m["fp"] + st_m["tn"]
        den_s = st_s["tp"] + st_s["fn"]
        w = merger / den_m if den_m > 0 else merger
        w += splitter / den_s if den_s > 0 else splitter
        total = st_m["tp"] + st_m["tn"] + st_m["fp"] + st_m["fn"]
        re = (st_m["fp"] + st_s["fn"]) / total if total > 0 else 0.0
        stats = {"rand_error": re, "n": st_m["n"], "merger_pass": st_m, "splitter_pass": st_s}
    n = stats["n"]
    if norm_type == "num" and n > 0:
        w /= n
    elif norm_type == "pair" and n > 1:
        w /= float(n) * (n - 1)
    return w.astype(p.dtype, copy=False), stats


def malis_cost(props, lbls, w):
    """MALIS-weighted pixel error and cross-entropy of one affinity output.

    mc = sum(w * [(p > 0.5) != (l > 0.5)]) / sum(w) and
    me = sum(w * BCE(p, l)) / sum(w), BCE = -l log p - (1 - l) log(1 - p) with p clipped to
    [1e-7, 1 - 1e-7]; both are 0.0 when sum(w) is 0.  Arrays must have equal shapes.

    Returns
    -------
    (mc, me) : tuple of float
    """
    p = np.asarray(props, dtype=np.float64)
    lab = np.asarray(lbls, dtype=np.float64)
    wt = np.asarray(w, dtype=np.float64)
    if lab.shape != p.shape:
        raise ValueError(f"lbls has shape {lab.shape}, which does not match props {p.shape}")
    if wt.shape != p.shape:
        raise ValueError(f"w has shape {wt.shape}, which does not match props {p.shape}")
    total = wt.sum()
    if total == 0:
        return 0.0, 0.0
    wrong = (p > 0.5) != (lab > 0.5)
    mc = float(wt[wrong].sum() / total)
    q = np.clip(p, _EPS, 1.0 - _EPS)
    bce = -lab * np.log(q) - (1.0 - lab) * np.log1p(-q)
    me = float((wt * bce).sum() / total)
    return mc, me
