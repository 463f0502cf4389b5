"""Element-wise kernels: transfer functions, channel sums, dropout, maxout, add/scale."""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free
from znn._core._common cimport check, znn_runtime_init

cnp.import_array()
check(znn_runtime_init())


cdef extern from "pointwise.h" nogil:
    int ZNN_MAXOUT_MAX
    int znn_transfer_forward_s(float *x, int64_t C, int64_t n, const float *bias, int func,
                               double a, double b, int nthreads)
    int znn_transfer_forward_d(double *x, int64_t C, int64_t n, const double *bias, int func,
                               double a, double b, int nthreads)
    int znn_transfer_backward_s(float *g, const float *y, int64_t total, int func, double a,
                                double b, int nthreads)
    int znn_transfer_backward_d(double *g, const double *y, int64_t total, int func, double a,
                                double b, int nthreads)
    int znn_transfer_backward_sum_s(float *g, const float *y, int64_t C, int64_t n, int func,
                                    double a, double b, double *sums, int nthreads)
    int znn_transfer_backward_sum_d(double *g, const double *y, int64_t C, int64_t n, int func,
                                    double a, double b, double *sums, int nthreads)
    int znn_channel_sum_s(const float *g, int64_t C, int64_t n, double *out, int nthreads)
    int znn_channel_sum_d(const double *g, int64_t C, int64_t n, double *out, int nthreads)
    int znn_dropout_forward_s(const float *x, int64_t total, double keep, uint64_t seed,
                              float *y, uint8_t *mask, int nthreads)
    int znn_dropout_forward_d(const double *x, int64_t total, double keep, uint64_t seed,
                              double *y, uint8_t *mask, int nthreads)
    int znn_dropout_backward_s(const float *g, const uint8_t *mask, int64_t total, double keep,
                               float *out, int nthreads)
    int znn_dropout_backward_d(const double *g, const uint8_t *mask, int64_t total,
                               double keep, double *out, int nthreads)
    int znn_dropout_mask(int64_t total, double keep, uint64_t seed, uint8_t *mask,
                         int nthreads)
    int znn_maxout_forward_s(const float **xs, int k, int64_t total, float *y,
                             uint8_t *argidx, int nthreads)
    int znn_maxout_forward_d(const double **xs, int k, int64_t total, double *y,
                             uint8_t *argidx, int nthreads)
    int znn_maxout_backward_s(const float *g, const uint8_t *argidx, int k, int64_t total,
                              float **outs, int nthreads)
    int znn_maxout_backward_d(const double *g, const uint8_t *argidx, int k, int64_t total,
                              double **outs, int nthreads)
    int znn_add_into_s(float *dst, const float *src, int64_t total, int nthreads)
    int znn_add_into_d(double *dst, const double *src, int64_t total, int nthreads)
    int znn_scale_into_s(float *dst, int64_t total, double alpha, int nthreads)
    int znn_scale_into_d(double *dst, int64_t total, double alpha, int nthreads)

LINEAR = 0
RECTIFY_LINEAR = 1
TANH = 2
LOGISTICS = 3
FORWARD_LOGISTICS = 4
SOFT_SIGN = 5
FUNCTIONS = {
    "linear": LINEAR,
    "rectify_linear": RECTIFY_LINEAR,
    "tanh": TANH,
    "logistics": LOGISTICS,
    "forward_logistics": FORWARD_LOGISTICS,
    "soft_sign": SOFT_SIGN,
}
MAXOUT_MAX = ZNN_MAXOUT_MAX
_REALS = (np.dtype(np.float32), np.dtype(np.float64))


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


def _real(x, name, writable=False):
    """Validate a float32/float64 array; in-place targets must be C-contiguous."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _REALS:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if writable:
        if not x.flags.c_contiguous or not x.flags.writeable:
            raise ValueError(f"{name} must be C-contiguous and writeable")
        return x
    return np.ascontiguousarray(x)


def _like(arr, ref, dtype, name):
    """Validate an optional output array with ref's shape and `dtype` (or allocate one)."""
    if arr is None:
        return np.empty(ref.shape, dtype=dtype)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.shape != ref.shape:
        raise ValueError(f"{name} must have shape {ref.shape}, got {arr.shape}")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")
    return arr


def _same(a, ref, name, dtype=None):
    """Validate a read-only input matching ref's shape (and ref's dtype unless given)."""
    dtype = ref.dtype if dtype is None else np.dtype(dtype)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {a.dtype}")
    if a.shape != ref.shape:
        raise ValueError(f"{name} must have shape {ref.shape}, got {a.shape}")
    return np.ascontiguousarray(a)


def _func(func):
    if isinstance(func, str):
        if func not in FUNCTIONS:
            raise ValueError(f"func: unknown transfer function {func!r}; "
                             f"known: {', '.join(FUNCTIONS)}")
        return FUNCTIONS[func]
    if isinstance(func, (bool, np.bool_)) or not isinstance(func, (int, np.integer)) \
            or not 0 <= func < len(FUNCTIONS):
        raise ValueError(f"func must be a code 0..{len(FUNCTIONS) - 1} or a name, got {func!r}")
    return int(func)


def _keep(keep):
    keep = float(keep)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    return keep


def transfer_forward(x, bias, func, double a=1.0, double b=0.0, int nthreads=0):
    """In place x[c] = f(x[c] + bias[c]) on x of shape (C, ...); bias None means no bias.

    func is a code (LINEAR ... SOFT_SIGN) or a name from FUNCTIONS; a, b are the
    function_args of linear (a*x + b) and tanh (a*tanh(b*x)).  Returns x.
    """
    x = _real(x, "x", writable=True)
    cdef int code = _func(func)
    if x.ndim < 1:
        raise ValueError("x must have a leading channel axis")
    if code == TANH and a == 0.0:
        raise ValueError("a must be non-zero for tanh")
    cdef int64_t C = x.shape[0]
    cdef int64_t n = x.size // C if C else 0
    cdef void *pb = NULL
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=x.dtype)
        if bias.shape != (C,):
            raise ValueError(f"bias must have shape ({C},), got {bias.shape}")
        pb = _ptr(bias)
    cdef void *px = _ptr(x)
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_transfer_forward_s(<float *>px, C, n, <float *>pb, code, a, b, nthreads)
        else:
            st = znn_transfer_forward_d(<double *>px, C, n, <double *>pb, code, a, b, nthreads)
    check(st)
    return x


def _backward_args(g, y, func, double a):
    """(g, y, function code) of the transfer backward functions, validated."""
    g = _real(g, "g", writable=True)
    y = _same(y, g, "y")
    code = _func(func)
    if code == TANH and a == 0.0:
        raise ValueError("a must be non-zero for tanh")
    return g, y, code


def _channels(g):
    """(C, values per channel) of g (C, ...)."""
    if g.ndim < 1:
        raise ValueError("g must have a leading channel axis")
    C = g.shape[0]
    return C, (g.size // C if C else 0)


def transfer_backward(g, y, func, double a=1.0, double b=0.0, int nthreads=0):
    """In place g *= f'(y), with y the forward output (same shape and dtype).  Returns g.

    forward_logistics leaves g unchanged (the loss supplies the pre-activation gradient).
    """
    g, y, code_ = _backward_args(g, y, func, a)
    cdef int code = code_
    cdef int64_t total = g.size
    cdef void *pg = _ptr(g)
    cdef void *py = _ptr(y)
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_transfer_backward_s(<float *>pg, <float *>py, total, code, a, b, nthreads)
        else:
            st = znn_transfer_backward_d(<double *>pg, <double *>py, total, code, a, b,
                                         nthreads)
    check(st)
    return g


def transfer_backward_sum(g, y, func, double a=1.0, double b=0.0, int nthreads=0):
    """transfer_backward(g, y, ..) then channel_sum(g) in one pass over g (the same results).

    g (C, ...) is changed in place; returns the per-channel sums (C,) as float64.
    """
    g, y, code_ = _backward_args(g, y, func, a)
    cdef int code = code_
    C_, n_ = _channels(g)
    cdef int64_t C = C_, n = n_
    out = np.empty(C, dtype=np.float64)
    cdef void *pg = _ptr(g)
    cdef void *py = _ptr(y)
    cdef double *po = <double *>_ptr(out)
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_transfer_backward_sum_s(<float *>pg, <float *>py, C, n, code, a, b, po,
                                             nthreads)
        else:
            st = znn_transfer_backward_sum_d(<double *>pg, <double *>py, C, n, code, a, b, po,
                                             nthreads)
    check(st)
    return out


def channel_sum(g, int nthreads=0):
    """Per-channel sums of g (C, ...) as float64 (C,), accumulated in double."""
    g = _real(g, "g")
    C_, n_ = _channels(g)
    cdef int64_t C = C_, n = n_
    out = np.empty(C, dtype=np.float64)
    cdef void *pg = _ptr(g)
    cdef double *po = <double *>_ptr(out)
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_channel_sum_s(<float *>pg, C, n, po, nthreads)
        else:
            st = znn_channel_sum_d(<double *>pg, C, n, po, nthreads)
    check(st)
    return out


def _seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def dropout_mask(shape, keep, seed, int nthreads=0):
    """The uint8 keep-mask dropout_forward uses for an array of `shape` (1 = kept)."""
    keep = _keep(keep)
    cdef uint64_t s = _seed(seed)
    mask = np.empty(tuple(shape), dtype=np.uint8)
    cdef int64_t total = mask.size
    cdef double k = keep
    cdef uint8_t *pm = <uint8_t *>_ptr(mask)
    cdef int st
    with nogil:
        st = znn_dropout_mask(total, k, s, pm, nthreads)
    check(st)
    return mask


def dropout_forward(x, keep, seed, out=None, mask=None, int nthreads=0):
    """Inverted dropout: y = x * mask / keep with a per-element Bernoulli(keep) mask.

    The mask is a hash of (seed, flat index): it depends only on seed, keep and the shape,
    never on threads.  out may be x (in place).  Returns (y, mask uint8).
    """
    x = _real(x, "x")
    keep = _keep(keep)
    cdef uint64_t s = _seed(seed)
    y = _like(out, x, x.dtype, "out")
    m = _like(mask, x, np.uint8, "mask")
    cdef int64_t total = x.size
    cdef double k = keep
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(y)
    cdef uint8_t *pm = <uint8_t *>_ptr(m)
    cdef int st
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            st = znn_dropout_forward_s(<float *>px, total, k, s, <float *>py, pm, nthreads)
        else:
            st = znn_dropout_forward_d(<double *>px, total, k, s, <double *>py, pm, nthreads)
    check(st)
    return y, m


def dropout_backward(g, mask, keep, out=None, int nthreads=0):
    """g * mask / keep (out may be g)."""
    g = _real(g, "g")
    mask = _same(mask, g, "mask", np.uint8)
    keep = _keep(keep)
    y = _like(out, g, g.dtype, "out")
    cdef int64_t total = g.size
    cdef double k = keep
    cdef void *pg = _ptr(g)
    cdef void *py = _ptr(y)
    cdef uint8_t *pm = <uint8_t *>_ptr(mask)
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_dropout_backward_s(<float *>pg, pm, total, k, <float *>py, nthreads)
        else:
            st = znn_dropout_backward_d(<double *>pg, pm, total, k, <double *>py, nthreads)
    check(st)
    return y


def maxout_forward(xs, out=None, argidx=None, int nthreads=0):
    """Element-wise max over the k same-shape arrays xs; returns (y, argidx uint8).

    argidx is the index of the winning array; on ties the LATER array wins (a fixed rule
    replacing the original's thread-dependent arrival order).
    """
    xs = list(xs)
    cdef int k = len(xs)
    if not 1 <= k <= ZNN_MAXOUT_MAX:
        raise ValueError(f"xs must hold 1..{ZNN_MAXOUT_MAX} arrays, got {k}")
    first = _real(xs[0], "xs[0]")
    arrs = [first] + [_same(a, first, f"xs[{j}]") for j, a in enumerate(xs[1:], 1)]
    y = _like(out, first, first.dtype, "out")
    idx = _like(argidx, first, np.uint8, "argidx")
    cdef int64_t total = first.size
    cdef void **ptrs = <void **>malloc(k * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    cdef int j
    for j in range(k):
        ptrs[j] = _ptr(arrs[j])
    cdef void *py = _ptr(y)
    cdef uint8_t *pi = <uint8_t *>_ptr(idx)
    cdef int st
    cdef bint single = first.dtype == np.float32
    with nogil:
        if single:
            st = znn_maxout_forward_s(<const float **>ptrs, k, total, <float *>py, pi, nthreads)
        else:
            st = znn_maxout_forward_d(<const double **>ptrs, k, total, <double *>py, pi,
                                      nthreads)
    free(ptrs)
    check(st)
    return y, idx


def maxout_backward(g, argidx, int k, int nthreads=0):
    """List of k arrays: g where argidx == j, else 0."""
    g = _real(g, "g")
    argidx = _same(argidx, g, "argidx", np.uint8)
    if not 1 <= k <= ZNN_MAXOUT_MAX:
        raise ValueError(f"k must be in 1..{ZNN_MAXOUT_MAX}, got {k}")
    outs = [np.empty_like(g) for _ in range(k)]
    cdef int64_t total = g.size
    cdef void **ptrs = <void **>malloc(k * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    cdef int j
    for j in range(k):
        ptrs[j] = _ptr(outs[j])
    cdef void *pg = _ptr(g)
    cdef uint8_t *pi = <uint8_t *>_ptr(argidx)
    cdef int st
    cdef bint single = g.dtype == np.float32
    with nogil:
        if single:
            st = znn_maxout_backward_s(<float *>pg, pi, k, total, <float **>ptrs, nthreads)
        else:
            st = znn_maxout_backward_d(<double *>pg, pi, k, total, <double **>ptrs, nthreads)
    free(ptrs)
    check(st)
    return outs


def add_into(dst, src, int nthreads=0):
    """dst += src (same shape and dtype); returns dst."""
    dst = _real(dst, "dst", writable=True)
    src = _same(src, dst, "src")
    cdef int64_t total = dst.size
    cdef void *pd = _ptr(dst)
    cdef void *ps = _ptr(src)
    cdef int st
    cdef bint single = dst.dtype == np.float32
    with nogil:
        if single:
            st = znn_add_into_s(<float *>pd, <float *>ps, total, nthreads)
        else:
            st = znn_add_into_d(<double *>pd, <double *>ps, total, nthreads)
    check(st)
    return dst


def scale_into(dst, double alpha, int nthreads=0):
    """dst *= alpha in place; returns dst."""
    dst = _real(dst, "dst", writable=True)
    cdef int64_t total = dst.size
    cdef void *pd = _ptr(dst)
    cdef int st
    cdef bint single = dst.dtype == np.float32
    with nogil:
        if single:
            st = znn_scale_into_s(<float *>pd, total, alpha, nthreads)
        else:
            st = znn_scale_into_d(<double *>pd, total, alpha, nthreads)
    check(st)
    return dst
