"""Block gather / scatter of the blocked FFT convolution (see src/blocks.h)."""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from znn._core._common cimport check, znn_runtime_init

cnp.import_array()
check(znn_runtime_init())


cdef extern from "blocks.h" nogil:
    int znn_blocks_gather(const void *x, size_t es, int64_t C, const int64_t *shape,
                          const int64_t *origins, int64_t P, const int64_t *d,
                          const int64_t *L, void *out, int nthreads)
    int znn_blocks_scatter(const void *blk, size_t es, int64_t C, int64_t P, const int64_t *V,
                           const int64_t *origins, const int64_t *counts, const int64_t *d,
                           void *y, const int64_t *shape, int nthreads)

_REALS = (np.dtype(np.float32), np.dtype(np.float64))


def _maps(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype not in _REALS or a.ndim != ndim:
        raise TypeError(f"{name} must be a float32/float64 array with {ndim} dimensions")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _table(name, t, rows):
    t = np.ascontiguousarray(t, dtype=np.int64)
    if t.shape != (rows, 3):
        raise ValueError(f"{name} must have shape ({rows}, 3), got {t.shape}")
    return t


def _triple(name, v):
    v = np.ascontiguousarray(v, dtype=np.int64)
    if v.shape != (3,):
        raise ValueError(f"{name} must have 3 entries")
    return v


def blocks_gather(x, origins, step, block, out=None, int nthreads=0):
    """(C, P, *block) blocks of the maps x (C, Z, Y, X): out[c, p, a] = x[c, origins[p] +
    step * a], zeros outside the maps."""
    x = _maps("x", x, 4)
    o = np.ascontiguousarray(origins, dtype=np.int64).reshape(-1, 3)
    d, L = _triple("step", step), _triple("block", block)
    P = o.shape[0]
    shape = (x.shape[0], P) + tuple(int(v) for v in L)
    if out is None:
        out = np.empty(shape, x.dtype)
    elif out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {x.dtype} array of shape {shape}")
    s = np.array(x.shape[1:], np.int64)
    cdef int64_t[::1] s_ = s, o_ = o.reshape(-1), d_ = d, L_ = L
    cdef int64_t C = x.shape[0], P_ = P
    cdef size_t es = x.dtype.itemsize
    cdef const void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef int st
    if P == 0 or C == 0:
        return out
    with nogil:
        st = znn_blocks_gather(px, es, C, &s_[0], &o_[0], P_, &d_[0], &L_[0], po, nthreads)
    check(st)
    return out


def blocks_scatter(blk, origins, counts, step, y, int nthreads=0):
    """y[c, origins[p] + step * a] = blk[c, p, a] for a < counts[p] (per axis); blk is
    (C, P, V0, V1, V2), y (C, Z, Y, X)."""
    blk = _maps("blk", blk, 5)
    y = _maps("y", y, 4)
    if y.dtype != blk.dtype or y.shape[0] != blk.shape[0] or not y.flags.writeable:
        raise ValueError("y must be writeable, with blk's dtype and channel count")
    P = blk.shape[1]
    o, n = _table("origins", origins, P), _table("counts", counts, P)
    d = _triple("step", step)
    V = np.array(blk.shape[2:], np.int64)
    s = np.array(y.shape[1:], np.int64)
    cdef int64_t[::1] s_ = s, o_ = o.reshape(-1), n_ = n.reshape(-1), d_ = d, V_ = V
    cdef int64_t C = blk.shape[0], P_ = P
    cdef size_t es = blk.dtype.itemsize
    cdef const void *pb = cnp.PyArray_DATA(blk)
    cdef void *py = cnp.PyArray_DATA(y)
    cdef int st
    if P == 0 or C == 0:
        return y
    with nogil:
        st = znn_blocks_scatter(pb, es, C, P_, &V_[0], &o_[0], &n_[0], &d_[0], py, &s_[0],
                                nthreads)
    check(st)
    return y

