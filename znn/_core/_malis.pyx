"""MALIS weights, true segmentation and rand error of affinity graphs (C kernels, GIL released)."""
import numpy as np

from libc.stdint cimport int64_t
from znn._core._common cimport check, znn_runtime_init

check(znn_runtime_init())

cdef extern from "malis.h" nogil:
    ctypedef struct znn_malis_stats:
        int64_t n
        double tp, tn, fp, fn
        double rand_error
    int znn_malis_segment_s(const float *true_affs, const int64_t *shape, int64_t *seg,
                            int64_t *nseg, int64_t *n_labelled)
    int znn_malis_segment_d(const double *true_affs, const int64_t *shape, int64_t *seg,
                            int64_t *nseg, int64_t *n_labelled)
    int znn_malis_weights_s(const float *affs, const int64_t *seg, int64_t nseg,
                            const int64_t *shape, double high, double low, int frac_norm,
                            double *merger, double *splitter, znn_malis_stats *stats)
    int znn_malis_weights_d(const double *affs, const int64_t *seg, int64_t nseg,
                            const int64_t *shape, double high, double low, int frac_norm,
                            double *merger, double *splitter, znn_malis_stats *stats)


cdef _check_affs(a, str name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, Z, Y, X), got {a.shape}")
    if a.shape[1] < 1 or a.shape[2] < 1 or a.shape[3] < 1:
        raise ValueError(f"{name} must not be empty, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def segment(true_affs):
    """(seg, nseg, n_labelled): components of true_affs > 0.5; singletons get id 0.

    true_affs: C-contiguous float32/float64 (3, Z, Y, X).  seg is int64 (Z, Y, X) numbered
    1..nseg in raster order of each component's first voxel."""
    _check_affs(true_affs, "true_affs")
    cdef int64_t shape[3]
    shape[0], shape[1], shape[2] = true_affs.shape[1], true_affs.shape[2], true_affs.shape[3]
    seg = np.empty(true_affs.shape[1:], dtype=np.int64)
    cdef int64_t[:, :, ::1] sv = seg
    cdef int64_t nseg = 0, nl = 0
    cdef int status
    cdef float[:, :, :, ::1] fs
    cdef double[:, :, :, ::1] ds
    if true_affs.dtype == np.float32:
        fs = true_affs
        with nogil:
            status = znn_malis_segment_s(&fs[0, 0, 0, 0], shape, &sv[0, 0, 0], &nseg, &nl)
    else:
        ds = true_affs
        with nogil:
            status = znn_malis_segment_d(&ds[0, 0, 0, 0], shape, &sv[0, 0, 0], &nseg, &nl)
    check(status)
    return seg, int(nseg), int(nl)


def weights(affs, seg, int64_t nseg, double high=1.0, double low=0.0, bint frac_norm=False,
            bint want_weights=True):
    """(merger, splitter, stats) of affs against seg (ids in [0, nseg]); see malis.h.

    affs: C-contiguous float32/float64 (3, Z, Y, X); seg: C-contiguous int64 (Z, Y, X).
    merger/splitter are float64 like affs, or None when want_weights is false.  stats is a dict
    with n, tp, tn, fp, fn and rand_error."""
    _check_affs(affs, "affs")
    if not isinstance(seg, np.ndarray) or seg.dtype != np.int64:
        raise TypeError("seg must be an int64 numpy array")
    if seg.shape != affs.shape[1:]:
        raise ValueError(f"seg must have shape {affs.shape[1:]}, got {seg.shape}")
    if not seg.flags.c_contiguous:
        raise ValueError("seg must be C-contiguous")
    cdef int64_t shape[3]
    shape[0], shape[1], shape[2] = affs.shape[1], affs.shape[2], affs.shape[3]
    cdef int64_t[:, :, ::1] sv = seg
    cdef double *mp = NULL
    cdef double *sp = NULL
    cdef double[:, :, :, ::1] mv, spv
    merger = splitter = None
    if want_weights:
        merger = np.empty(affs.shape, dtype=np.float64)
        splitter = np.empty(affs.shape, dtype=np.float64)
        mv = merger
        spv = splitter
        mp = &mv[0, 0, 0, 0]
        sp = &spv[0, 0, 0, 0]
    cdef znn_malis_stats st
    cdef int status
    cdef int frac = 1 if frac_norm else 0
    cdef float[:, :, :, ::1] fa
    cdef double[:, :, :, ::1] da
    if affs.dtype == np.float32:
        fa = affs
        with nogil:
            status = znn_malis_weights_s(&fa[0, 0, 0, 0], &sv[0, 0, 0], nseg, shape, high,
                                         low, frac, mp, sp, &st)
    else:
        da = affs
        with nogil:
            status = znn_malis_weights_d(&da[0, 0, 0, 0], &sv[0, 0, 0], nseg, shape, high,
                                         low, frac, mp, sp, &st)
    check(status)
    stats = {"rand_error": st.rand_error, "n": int(st.n), "tp": st.tp, "tn": st.tn,
             "fp": st.fp, "fn": st.fn}
    return merger, splitter, stats
