"""Direct (spatial) dilated valid convolution kernels: forward, backward-data, backward-weight."""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t

from znn._core._common cimport check, znn_runtime_init

cnp.import_array()
check(znn_runtime_init())

cdef extern from "direct.h" nogil:
    int znn_direct_forward_s(const float *x, const float *w, float *y, int64_t n_in,
                             int64_t n_out, const int64_t *in_shape, const int64_t *k,
                             const int64_t *d, int accumulate, int nthreads)
    int znn_direct_forward_d(const double *x, const double *w, double *y, int64_t n_in,
                             int64_t n_out, const int64_t *in_shape, const int64_t *k,
                             const int64_t *d, int accumulate, int nthreads)
    int znn_direct_backward_data_s(const float *g, const float *w, float *dx, int64_t n_in,
                                   int64_t n_out, const int64_t *in_shape, const int64_t *k,
                                   const int64_t *d, int accumulate, int nthreads)
    int znn_direct_backward_data_d(const double *g, const double *w, double *dx, int64_t n_in,
                                   int64_t n_out, const int64_t *in_shape, const int64_t *k,
                                   const int64_t *d, int accumulate, int nthreads)
    int znn_direct_backward_weight_s(const float *x, const float *g, float *dw, int64_t n_in,
                                     int64_t n_out, const int64_t *in_shape, const int64_t *k,
                                     const int64_t *d, int accumulate, int nthreads)
    int znn_direct_backward_weight_d(const double *x, const double *g, double *dw,
                                     int64_t n_in, int64_t n_out, const int64_t *in_shape,
                                     const int64_t *k, const int64_t *d, int accumulate,
                                     int nthreads)
    int znn_direct_uses_mkl()

cdef extern from "direct_winograd.h" nogil:
    int znn_wino_tile(int64_t r, int points)
    # forward (x, w -> y), backward data (g, w -> dx), weight gradient (x, g -> dw)
    int znn_wino_forward_s(
            const float *x, const float *w, float *y, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_forward_d(
            const double *x, const double *w, double *y, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_backward_data_s(
            const float *g, const float *w, float *dx, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_backward_data_d(
            const double *g, const double *w, double *dx, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_backward_weight_s(
            const float *x, const float *g, float *dw, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_backward_weight_d(
            const double *x, const double *g, double *dw, int64_t n_in, int64_t n_out,
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
            int accumulate, int nthreads)
    int znn_wino_scratch_bytes(int64_t n_in, int64_t n_out, const int64_t *in_shape,
                               const int64_t *k, const int64_t *d, int points, int pass_,
                               int64_t elem, int nthreads, int64_t *bytes)

#: True when built with ZNN_USE_MKL_DIRECT_CONV=1 (GEMM lowering on MKL), False for plain loops.
MKL_DIRECT = bool(znn_direct_uses_mkl())

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


#: Inputs per tile axis the Winograd kernels offer (see conv_forward's `winograd`).
WINOGRAD_POINTS = (6, 8)


def winograd_fits(ksize):
    """Whether a kernel (kz, ky, kx) has Winograd tiles: y and x lengths 2..5 (any kz)."""
    k = tuple(int(v) for v in ksize)
    return len(k) == 3 and k[0] >= 1 and all(znn_wino_tile(r, 6) for r in k[1:])


def _winograd(winograd, k):
    """The tile points asked for (0: the GEMM lowering), checked against kernel k."""
    if winograd is None or winograd is False or winograd == 0:
        return 0
    if isinstance(winograd, bool) or winograd not in WINOGRAD_POINTS:
        raise ValueError(f"winograd must be 0 or one of {WINOGRAD_POINTS}, got {winograd!r}")
    if not winograd_fits(k):
        raise ValueError(f"winograd convolution needs kernel y and x lengths 2..5, got {tuple(k)}")
    return int(winograd)


_PASSES = ("forward", "backward_data", "backward_weight")


def winograd_scratch_bytes(n_in, n_out, in_shape, ksize, dilation, points, pass_="forward",
                           itemsize=4, nthreads=0):
    """Peak bytes the Winograd kernels allocate for one call of `pass_` ('forward',
    'backward_data' or 'backward_weight') on maps (n_in, *in_shape) -> n_out with kernel
    `ksize`, `dilation` and `points` (6 or 8): the threads' tile scratch plus the transformed
    kernels (or the weight gradient's partial sums).  Values of `itemsize` bytes."""
    k = _vec3("ksize", ksize, 1)
    cdef int pts = _winograd(points, k)
    if not pts:
        raise ValueError(f"points must be one of {WINOGRAD_POINTS}, got {points!r}")
    if pass_ not in _PASSES:
        raise ValueError(f"pass_ must be one of {_PASSES}, got {pass_!r}")
    if itemsize not in (4, 8) or min(int(n_in), int(n_out)) < 0:
        raise ValueError(f"need itemsize 4 or 8 and map counts >= 0, got {itemsize}, "
                         f"{n_in}, {n_out}")
    cdef int64_t cin[3]
    cdef int64_t ck[3]
    cdef int64_t cd[3]
    ins, d = _vec3("in_shape", in_shape, 1), _vec3("dilation", dilation, 1)
    _out_shape(ins, k, d, "in_shape")
    _fill3(cin, ins)
    _fill3(ck, k)
    _fill3(cd, d)
    cdef int64_t nbytes = 0
    check(znn_wino_scratch_bytes(int(n_in), int(n_out), cin, ck, cd, pts,
                                 _PASSES.index(pass_), int(itemsize), int(nthreads), &nbytes))
    return int(nbytes)


def _array(name, a, ndim):
    """Check that `a` is a C-contiguous float32/float64 ndarray with `ndim` dimensions."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in _DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _same_dtype(name, a, ref_name, ref):
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {ref_name} has dtype {ref.dtype}")


def _vec3(name, v, minimum):
    """A 3-vector of ints >= minimum (an int is repeated on every axis)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v, v, v)
    try:
        items = tuple(v)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of 3 ints, got {v!r}") from None
    if len(items) != 3 or not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool)
                                  for e in items):
        raise ValueError(f"{name} must be 3 ints (z, y, x), got {v!r}")
    items = tuple(int(e) for e in items)
    if min(items) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {items}")
    return items


def _out_shape(in_shape, k, d, in_name):
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(in_shape, k, d))
    if min(out) < 1:
        raise ValueError(
            f"w: kernel {tuple(k)} with dilation {tuple(d)} spans "
            f"{tuple((kk - 1) * dd + 1 for kk, dd in zip(k, d))}, larger than {in_name} "
            f"spatial shape {tuple(in_shape)}")
    return out


def _output(out, name, shape, dtype, inputs, accumulate):
    """Return a new array (zeroed when accumulating), or validate the caller's `out`."""
    if out is None:
        return np.zeros(shape, dtype=dtype) if accumulate else np.empty(shape, dtype=dtype)
    _array("out", out, len(shape))
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype} but must be {dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)} ({name}), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    for other_name, other in inputs:
        if np.may_share_memory(out, other):
            raise ValueError(f"out must not overlap {other_name}")
    return out


cdef inline void _fill3(int64_t *dst, tuple v):
    dst[0] = v[0]
    dst[1] = v[1]
    dst[2] = v[2]


def conv_forward(x, w, dilation, out=None, accumulate=False, nthreads=0, winograd=0):
    """Dilated valid true convolution y[j,p] = sum_i sum_t x[i, p+(K-1-t)*d] * w[i,j,t].

    Parameters
    ----------
    x : ndarray (n_in, Z, Y, X), float32 or float64, C-contiguous
    w : ndarray (n_in, n_out, kz, ky, kx), same dtype
    dilation : int or 3 ints (z, y, x), >= 1
    out : ndarray (n_out, Z', Y', X') with Z' = Z-(kz-1)*dz etc., optional
    accumulate : bool
        Add the result to `out` instead of overwriting it.
    nthreads : int
        Threads to use; <= 0 means every core.
    winograd : 0, 6 or 8
        0: the GEMM lowering; 6 or 8: the Winograd kernels with tiles of that many inputs per
        axis in y and x (needs y and x kernel lengths 2..5, see winograd_fits).

    Returns
    -------
    ndarray (n_out, Z', Y', X')
    """
    _array("x", x, 4)
    _array("w", w, 5)
    _same_dtype("w", w, "x", x)
    if w.shape[0] != x.shape[0]:
        raise ValueError(f"w has n_in={w.shape[0]} (w.shape[0]) but x has {x.shape[0]} maps")
    d = _vec3("dilation", dilation, 1)
    k = tuple(w.shape[2:])
    in_shape = tuple(x.shape[1:])
    out_sp = _out_shape(in_shape, k, d, "x")
    n_in, n_out = w.shape[0], w.shape[1]
    y = _output(out, "output", (n_out,) + out_sp, x.dtype, (("x", x), ("w", w)), accumulate)
    cdef int64_t cin[3]
    cdef int64_t ck[3]
    cdef int64_t cd[3]
    _fill3(cin, in_shape)
    _fill3(ck, k)
    _fill3(cd, d)
    cdef int64_t ni = n_in, no = n_out
    cdef int acc = 1 if accumulate else 0
    cdef int wino = _winograd(winograd, k)
    cdef int nt = nthreads
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pw = cnp.PyArray_DATA(w)
    cdef void *py = cnp.PyArray_DATA(y)
    cdef int st
    if x.dtype == np.float32:
        with nogil:
            if wino:
                st = znn_wino_forward_s(<float *>px, <float *>pw, <float *>py, ni, no, cin, ck, cd,
                                        wino, acc, nt)
            else:
                st = znn_direct_forward_s(<float *>px, <float *>pw, <float *>py, ni, no, cin, ck,
                                          cd, acc, nt)
    else:
        with nogil:
            if wino:
                st = znn_wino_forward_d(<double *>px, <double *>pw, <double *>py, ni, no, cin, ck,
                                        cd, wino, acc, nt)
            else:
                st = znn_direct_forward_d(<double *>px, <double *>pw, <double *>py, ni, no, cin,
                                          ck, cd, acc, nt)
    check(st)
    return y


def conv_backward_data(g, w, dilation, in_shape, out=None, accumulate=False, nthreads=0,
                       winograd=0):
    """Gradient to the input: dx[i, p+(K-1-t)*d] += g[j,p] * w[i,j,t] (a full convolution).

    Parameters
    ----------
    g : ndarray (n_out, Z', Y', X'), float32 or float64, C-contiguous
    w : ndarray (n_in, n_out, kz, ky, kx), same dtype
    dilation : int or 3 ints (z, y, x), >= 1
    in_shape : 3 ints (Z, Y, X), the forward input's spatial shape; Z' = Z-(kz-1)*dz etc.
    out : ndarray (n_in, Z, Y, X), optional
    accumulate : bool
        Add the result to `out` instead of overwriting it.
    nthreads : int
        Threads to use; <= 0 means every core.
    winograd : 0, 6 or 8
        0: the GEMM lowering; 6 or 8: the Winograd kernels with tiles of that many inputs per
        axis in y and x (needs y and x kernel lengths 2..5, see winograd_fits).

    Returns
    -------
    ndarray (n_in, Z, Y, X)
    """
    _array("g", g, 4)
    _array("w", w, 5)
    _same_dtype("w", w, "g", g)
    if w.shape[1] != g.shape[0]:
        raise ValueError(f"w has n_out={w.shape[1]} (w.shape[1]) but g has {g.shape[0]} maps")
    d = _vec3("dilation", dilation, 1)
    ins = _vec3("in_shape", in_shape, 1)
    k = tuple(w.shape[2:])
    out_sp = _out_shape(ins, k, d, "in_shape")
    if tuple(g.shape[1:]) != out_sp:
        raise ValueError(f"g has spatial shape {tuple(g.shape[1:])} but in_shape {ins} with "
                         f"kernel {k} and dilation {d} gives {out_sp}")
    n_in, n_out = w.shape[0], w.shape[1]
    dx = _output(out, "input gradient", (n_in,) + ins, g.dtype, (("g", g), ("w", w)), accumulate)
    cdef int64_t cin[3]
    cdef int64_t ck[3]
    cdef int64_t cd[3]
    _fill3(cin, ins)
    _fill3(ck, k)
    _fill3(cd, d)
    cdef int64_t ni = n_in, no = n_out
    cdef int acc = 1 if accumulate else 0
    cdef int wino = _winograd(winograd, k)
    cdef int nt = nthreads
    cdef void *pg = cnp.PyArray_DATA(g)
    cdef void *pw = cnp.PyArray_DATA(w)
    cdef void *px = cnp.PyArray_DATA(dx)
    cdef int st
    if g.dtype == np.float32:
        with nogil:
            if wino:
                st = znn_wino_backward_data_s(<float *>pg, <float *>pw, <float *>px, ni, no, cin,
                                              ck, cd, wino, acc, nt)
            else:
                st = znn_direct_backward_data_s(<float *>pg, <float *>pw, <float *>px, ni, no, cin,
                                                ck, cd, acc, nt)
    else:
        with nogil:
            if wino:
                st = znn_wino_backward_data_d(<double *>pg, <double *>pw, <double *>px, ni, no,
                                              cin, ck, cd, wino, acc, nt)
            else:
                st = znn_direct_backward_data_d(<double *>pg, <double *>pw, <double *>px, ni, no,
                                                cin, ck, cd, acc, nt)
    check(st)
    return dx


def conv_backward_weight(x, g, dilation, out=None, accumulate=False, nthreads=0,
                         winograd=0):
    """Weight gradient dw[i,j,t] = sum_p g[j,p] * x[i, p+(K-1-t)*d].

    The kernel shape is K = in - out with dilation removed: K-1 = (X - X') / d per axis.

    Parameters
    ----------
    x : ndarray (n_in, Z, Y, X), float32 or float64, C-contiguous
    g : ndarray (n_out, Z', Y', X'), same dtype
    dilation : int or 3 ints (z, y, x), >= 1; (Z - Z') must be divisible by dz, etc.
    out : ndarray (n_in, n_out, kz, ky, kx), optional
    accumulate : bool
        Add the result to `out` instead of overwriting it.
    nthreads : int
        Threads to use; <= 0 means every core.
    winograd : 0, 6 or 8
        0: the GEMM lowering; 6 or 8: the Winograd kernels with tiles of that many inputs per
        axis in y and x (needs y and x kernel lengths 2..5, see winograd_fits).

    Returns
    -------
    ndarray (n_in, n_out, kz, ky, kx)
    """
    _array("x", x, 4)
    _array("g", g, 4)
    _same_dtype("g", g, "x", x)
    d = _vec3("dilation", dilation, 1)
    in_shape = tuple(x.shape[1:])
    k = []
    for axis, (n, m, dd) in enumerate(zip(in_shape, g.shape[1:], d)):
        if m < 1 or m > n or (n - m) % dd:
            raise ValueError(f"g spatial shape {tuple(g.shape[1:])} does not fit x spatial shape "
                             f"{in_shape} with dilation {d} (axis {axis})")
        k.append((n - m) // dd + 1)
    k = tuple(k)
    n_in, n_out = x.shape[0], g.shape[0]
    dw = _output(out, "weights", (n_in, n_out) + k, x.dtype, (("x", x), ("g", g)), accumulate)
    cdef int64_t cin[3]
    cdef int64_t ck[3]
    cdef int64_t cd[3]
    _fill3(cin, in_shape)
    _fill3(ck, k)
    _fill3(cd, d)
    cdef int64_t ni = n_in, no = n_out
    cdef int acc = 1 if accumulate else 0
    cdef int wino = _winograd(winograd, k)
    cdef int nt = nthreads
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pg = cnp.PyArray_DATA(g)
    cdef void *pw = cnp.PyArray_DATA(dw)
    cdef int st
    if x.dtype == np.float32:
        with nogil:
            if wino:
                st = znn_wino_backward_weight_s(<float *>px, <float *>pg, <float *>pw, ni, no, cin,
                                                ck, cd, wino, acc, nt)
            else:
                st = znn_direct_backward_weight_s(<float *>px, <float *>pg, <float *>pw, ni, no,
                                                  cin, ck, cd, acc, nt)
    else:
        with nogil:
            if wino:
                st = znn_wino_backward_weight_d(<double *>px, <double *>pg, <double *>pw, ni, no,
                                                cin, ck, cd, wino, acc, nt)
            else:
                st = znn_direct_backward_weight_d(<double *>px, <double *>pg, <double *>pw, ni, no,
                                                  cin, ck, cd, acc, nt)
    check(st)
    return dw
