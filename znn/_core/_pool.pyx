"""Max filtering (dense sliding max) and max pooling kernels, forward and backward."""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from znn._core._common cimport check, znn_runtime_init

cnp.import_array()
check(znn_runtime_init())


cdef extern from "pool.h" nogil:
    int ZNN_POOL_NAIVE_MAX
    int ZNN_POOL_RECOMPUTE_MAX
    int znn_max_filter_forward_s(const float *x, int64_t C, const int64_t *in_shape,
                                 const int64_t *size, const int64_t *dilation,
                                 float *y, int64_t *argmax, int nthreads)
    int znn_max_filter_forward_d(const double *x, int64_t C, const int64_t *in_shape,
                                 const int64_t *size, const int64_t *dilation,
                                 double *y, int64_t *argmax, int nthreads)
    int znn_max_filter_values_s(const float *x, int64_t C, const int64_t *in_shape,
                                const int64_t *size, const int64_t *dilation, float *y,
                                int nthreads)
    int znn_max_filter_values_d(const double *x, int64_t C, const int64_t *in_shape,
                                const int64_t *size, const int64_t *dilation, double *y,
                                int nthreads)
    int znn_max_pool_forward_s(const float *x, int64_t C, const int64_t *in_shape,
                               const int64_t *size, float *y, int64_t *argmax, int nthreads)
    int znn_max_pool_forward_d(const double *x, int64_t C, const int64_t *in_shape,
                               const int64_t *size, double *y, int64_t *argmax, int nthreads)
    int znn_max_backward_s(const float *g, const int64_t *argmax, int64_t C, int64_t out_vol,
                           int64_t in_vol, float *dx, int accumulate, int nthreads)
    int znn_max_backward_d(const double *g, const int64_t *argmax, int64_t C, int64_t out_vol,
                           int64_t in_vol, double *dx, int accumulate, int nthreads)
    int znn_max_filter_backward_recompute_s(const float *x, const float *g, int64_t C,
                                            const int64_t *in_shape, const int64_t *size,
                                            const int64_t *dilation, float *dx,
                                            int accumulate, int nthreads)
    int znn_max_filter_backward_recompute_d(const double *x, const double *g, int64_t C,
                                            const int64_t *in_shape, const int64_t *size,
                                            const int64_t *dilation, double *dx,
                                            int accumulate, int nthreads)

NAIVE_MAX = ZNN_POOL_NAIVE_MAX
RECOMPUTE_MAX = ZNN_POOL_RECOMPUTE_MAX
_REALS = (np.dtype(np.float32), np.dtype(np.float64))


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


def _maps(x, name):
    """Validate a (C, Y, X) or (C, Z, Y, X) float array; return a C-contiguous array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _REALS:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, Y, X) or (C, Z, Y, X), got {x.shape}")
    return np.ascontiguousarray(x)


def _vec(v, ndim, name, lo=1):
    """Expand an int or sequence to `ndim` spatial ints >= lo."""
    if np.isscalar(v):
        vals = [v] * ndim
    else:
        vals = list(v)
    if len(vals) != ndim:
        raise ValueError(f"{name} must have {ndim} entries for {ndim}D maps, got {v!r}")
    out = []
    for a in vals:
        if isinstance(a, (bool, np.bool_)) or int(a) != a:
            raise ValueError(f"{name} must contain integers, got {v!r}")
        if int(a) < lo:
            raise ValueError(f"{name} entries must be >= {lo}, got {v!r}")
        out.append(int(a))
    return out


def _shape3(spatial):
    s = [int(a) for a in spatial]
    return [1] * (3 - len(s)) + s


def _target(arr, shape, dtype, name):
    """Return `arr` (validated) or a new empty array for an output parameter."""
    if arr is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    return arr


def _no_alias(x, y, am=None):
    if np.may_share_memory(x, y) or (am is not None and np.may_share_memory(x, am)):
        raise ValueError("out/argmax must not share memory with x")
    if am is not None and np.may_share_memory(y, am):
        raise ValueError("out and argmax must not share memory")


cdef struct window3:  # a max filter's input shape, size and dilation as C 3-vectors
    int64_t ins[3]
    int64_t ks[3]
    int64_t ds[3]


cdef window3 _window3(i3, k3, d3):
    cdef window3 w
    for a in range(3):
        w.ins[a] = i3[a]
        w.ks[a] = k3[a]
        w.ds[a] = d3[a]
    return w


def _filter_args(x, size, dilation):
    """(x, output shape, in / size / dilation as 3-vectors) of a max filter."""
    x = _maps(x, "x")
    nd = x.ndim - 1
    k = _vec(size, nd, "size")
    d = _vec(dilation, nd, "dilation")
    oshape = []
    for a in range(nd):
        span = (k[a] - 1) * d[a] + 1
        if x.shape[1 + a] < span:
            raise ValueError(f"size/dilation: window extent {span} exceeds x extent "
                             f"{x.shape[1 + a]} along spatial axis {a}")
        oshape.append(x.shape[1 + a] - (k[a] - 1) * d[a])
    return x, (x.shape[0], *oshape), _shape3(x.shape[1:]), [1] * (3 - nd) + k, \
        [1] * (3 - nd) + d


def max_filter_forward(x, size, dilation=1, out=None, argmax=None, int nthreads=0):
    """Dense sliding max of each channel of x over a `size` window dilated by `dilation`.

    Output extent per axis is in - (size-1)*dilation.  Returns (y, argmax) where argmax
    (int64) is the flat index of the chosen voxel in the channel's input volume; among tied
    maxima the smallest x, then y, then z wins (separable passes with strict >).
    """
    x, shape, i3, k3, d3 = _filter_args(x, size, dilation)
    y = _target(out, shape, x.dtype, "out")
    am = _target(argmax, shape, np.int64, "argmax")
    _no_alias(x, y, am)
    cdef window3 w = _window3(i3, k3, d3)
    cdef int64_t C = x.shape[0]
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int64_t *pa = <int64_t *>_ptr(am)
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_max_filter_forward_s(<float *>px, C, w.ins, w.ks, w.ds, <float *>py, pa,
                                          nthreads)
        else:
            st = znn_max_filter_forward_d(<double *>px, C, w.ins, w.ks, w.ds, <double *>py, pa,
                                          nthreads)
    check(st)
    return y, am


def max_filter_values(x, size, dilation=1, out=None, int nthreads=0):
    """The values of max_filter_forward without the arg-max (forward-only passes): half the
    memory traffic and no int64 volume."""
    x, shape, i3, k3, d3 = _filter_args(x, size, dilation)
    y = _target(out, shape, x.dtype, "out")
    _no_alias(x, y)
    cdef window3 w = _window3(i3, k3, d3)
    cdef int64_t C = x.shape[0]
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_max_filter_values_s(<float *>px, C, w.ins, w.ks, w.ds, <float *>py,
                                         nthreads)
        else:
            st = znn_max_filter_values_d(<double *>px, C, w.ins, w.ks, w.ds, <double *>py,
                                         nthreads)
    check(st)
    return y


def max_pool_forward(x, size, out=None, argmax=None, int nthreads=0):
    """Non-overlapping max pooling (windows start at 0; every extent must divide by size).

    Returns (y, argmax); identical to max_filter_forward(x, size, 1) sampled every `size`.
    """
    x = _maps(x, "x")
    nd = x.ndim - 1
    k = _vec(size, nd, "size")
    for a in range(nd):
        if x.shape[1 + a] % k[a]:
            raise ValueError(f"size: x extent {x.shape[1 + a]} along spatial axis {a} is not "
                             f"a multiple of {k[a]}")
    shape = (x.shape[0], *[x.shape[1 + a] // k[a] for a in range(nd)])
    y = _target(out, shape, x.dtype, "out")
    am = _target(argmax, shape, np.int64, "argmax")
    _no_alias(x, y, am)
    cdef int64_t ins[3]
    cdef int64_t ks[3]
    i3, k3 = _shape3(x.shape[1:]), [1] * (3 - nd) + k
    for a in range(3):
        ins[a] = i3[a]
        ks[a] = k3[a]
    cdef int64_t C = x.shape[0]
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef int64_t *pa = <int64_t *>_ptr(am)
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_max_pool_forward_s(<float *>px, C, ins, ks, <float *>py, pa, nthreads)
        else:
            st = znn_max_pool_forward_d(<double *>px, C, ins, ks, <double *>py, pa, nthreads)
    check(st)
    return y, am


def _backward(g, argmax, in_shape, out, accumulate, int nthreads):
    g = _maps(g, "g")
    if not isinstance(argmax, np.ndarray):
        raise TypeError(f"argmax must be a numpy array, got {type(argmax).__name__}")
    if argmax.dtype != np.int64:
        raise TypeError(f"argmax must be int64, got {argmax.dtype}")
    if argmax.shape != g.shape:
        raise ValueError(f"argmax shape {argmax.shape} differs from g shape {g.shape}")
    argmax = np.ascontiguousarray(argmax)
    ishape = tuple(int(a) for a in in_shape)
    if len(ishape) != g.ndim or ishape[0] != g.shape[0] or min(ishape) < 1:
        raise ValueError(f"in_shape {tuple(in_shape)} must be (C, ...) with C = {g.shape[0]} "
                         f"and {g.ndim - 1} positive spatial extents")
    if out is None:
        dx = np.empty(ishape, dtype=g.dtype)
        accumulate = False
    else:
        dx = _target(out, ishape, g.dtype, "out")
        if np.may_share_memory(dx, g) or np.may_share_memory(dx, argmax):
            raise ValueError("out must not share memory with g or argmax")
    cdef int64_t C = g.shape[0]
    cdef int64_t ovol = g.size // C if C else 0
    cdef int64_t ivol = dx.size // C if C else 0
    cdef void *pg = _ptr(g)
    cdef void *pd = _ptr(dx)
    cdef int64_t *pa = <int64_t *>_ptr(argmax)
    cdef int acc = 1 if accumulate else 0
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_max_backward_s(<float *>pg, pa, C, ovol, ivol, <float *>pd, acc, nthreads)
        else:
            st = znn_max_backward_d(<double *>pg, pa, C, ovol, ivol, <double *>pd, acc, nthreads)
    check(st)
    return dx


def max_filter_backward(g, argmax, in_shape, out=None, accumulate=False, int nthreads=0):
    """Scatter-add the output gradient g into the arg-max positions; returns dx (in_shape).

    With `out` given and accumulate=True the gradient is added to out's contents.
    """
    return _backward(g, argmax, in_shape, out, accumulate, nthreads)


def max_pool_backward(g, argmax, in_shape, out=None, accumulate=False, int nthreads=0):
    """Backward of max_pool_forward: scatter g into the arg-max positions; returns dx."""
    return _backward(g, argmax, in_shape, out, accumulate, nthreads)


def max_filter_recomputes(size):
    """Whether a max filter window of `size` taps per axis is small enough for
    max_filter_backward_recompute (training then stores no arg-max)."""
    return int(np.prod(size)) <= ZNN_POOL_RECOMPUTE_MAX


def max_filter_backward_recompute(x, g, size, dilation=1, out=None, accumulate=False,
                                  int nthreads=0):
    """max_filter_backward without a stored arg-max: the window maxima are found again in x
    (the forward input) and each g goes to the first tap holding it in the forward's tie
    order (smallest x, then y, then z).  Same dx as max_filter_backward with the arg-max of
    max_filter_forward, up to the order of additions; a window whose maximum is NaN passes
    no gradient.  Windows of at most RECOMPUTE_MAX taps (see max_filter_recomputes)."""
    x, shape, i3, k3, d3 = _filter_args(x, size, dilation)
    if not max_filter_recomputes(k3):
        raise ValueError(f"size {tuple(size)}: {int(np.prod(k3))} taps; at most "
                         f"{ZNN_POOL_RECOMPUTE_MAX} without an arg-max")
    g = _maps(g, "g")
    if g.dtype != x.dtype:
        raise TypeError(f"g must have x's dtype {x.dtype}, got {g.dtype}")
    if tuple(g.shape) != tuple(shape):
        raise ValueError(f"g must have the output shape {tuple(shape)}, got {g.shape}")
    if out is None:
        dx = np.empty(x.shape, dtype=x.dtype)
        accumulate = False
    else:
        dx = _target(out, x.shape, x.dtype, "out")
        if np.may_share_memory(dx, g) or np.may_share_memory(dx, x):
            raise ValueError("out must not share memory with x or g")
    cdef window3 w = _window3(i3, k3, d3)
    cdef int64_t C = x.shape[0]
    cdef void *px = _ptr(x)
    cdef void *pg = _ptr(g)
    cdef void *pd = _ptr(dx)
    cdef int acc = 1 if accumulate else 0
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_max_filter_backward_recompute_s(<float *>px, <float *>pg, C, w.ins, w.ks,
                                                     w.ds, <float *>pd, acc, nthreads)
        else:
            st = znn_max_filter_backward_recompute_d(<double *>px, <double *>pg, C, w.ins, w.ks,
                                                     w.ds, <double *>pd, acc, nthreads)
    check(st)
    return dx
