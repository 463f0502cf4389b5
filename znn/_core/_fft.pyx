"""FFT convolution kernels on MKL: padded rfft, cropped irfft, kernel spectra, spectral MACs."""
cimport numpy as cnp
from libc.stdint cimport int64_t
import atexit
from operator import index as _index

import numpy as np

from znn._core._common cimport check, znn_runtime_init

cnp.import_array()
check(znn_runtime_init())

cdef extern from "fft_kernels.h" nogil:
    int ZNN_DONT_CACHE_FFTS
    const char *znn_fft_backend()
    int znn_fft_plan_cache_clear()
    int znn_fft_plan_cache_size()
    int znn_fft_set_strategy(int strategy)

    int znn_fft_rfft_s(const float *x, int64_t B, const int64_t *xs, const int64_t *n,
                       const int64_t *off, float *out, int nthreads)
    int znn_fft_rfft_d(const double *x, int64_t B, const int64_t *xs, const int64_t *n,
                       const int64_t *off, double *out, int nthreads)
    int znn_fft_irfft_s(const float *xf, int64_t B, const int64_t *n, const int64_t *off,
                        const int64_t *os, float *out, float scale, int accumulate, int nthreads)
    int znn_fft_irfft_d(const double *xf, int64_t B, const int64_t *n, const int64_t *off,
                        const int64_t *os, double *out, double scale, int accumulate, int nthreads)
    int znn_fft_kernel_spectra_s(const float *w, int64_t P, const int64_t *k, const int64_t *d,
                                 const int64_t *n, float *wf, int nthreads)
    int znn_fft_kernel_spectra_d(const double *w, int64_t P, const int64_t *k, const int64_t *d,
                                 const int64_t *n, double *wf, int nthreads)
    int znn_fft_mac_forward_s(const float *xf, const float *wf, float *yf, int64_t ni, int64_t no,
                              int64_t S, int accumulate, int nthreads)
    int znn_fft_mac_forward_d(const double *xf, const double *wf, double *yf, int64_t ni,
                              int64_t no, int64_t S, int accumulate, int nthreads)
    int znn_fft_mac_backward_s(const float *gf, const float *wf, float *dxf, int64_t ni,
                               int64_t no, int64_t S, int accumulate, int nthreads)
    int znn_fft_mac_backward_d(const double *gf, const double *wf, double *dxf, int64_t ni,
                               int64_t no, int64_t S, int accumulate, int nthreads)
    int znn_fft_mac_forward_streamed_s(const float *xf, const float *w, const int64_t *k,
                                       const int64_t *d, const int64_t *n, float *yf,
                                       int64_t ni, int64_t no, int accumulate, int nthreads)
    int znn_fft_mac_forward_streamed_d(const double *xf, const double *w, const int64_t *k,
                                       const int64_t *d, const int64_t *n, double *yf,
                                       int64_t ni, int64_t no, int accumulate, int nthreads)
    int znn_fft_mac_backward_streamed_s(const float *gf, const float *w, const int64_t *k,
                                        const int64_t *d, const int64_t *n, float *dxf,
                                        int64_t ni, int64_t no, int accumulate, int nthreads)
    int znn_fft_mac_backward_streamed_d(const double *gf, const double *w, const int64_t *k,
                                        const int64_t *d, const int64_t *n, double *dxf,
                                        int64_t ni, int64_t no, int accumulate, int nthreads)
    int znn_fft_weight_grad_s(const float *xf, const float *gf, int64_t ni, int64_t no,
                              const int64_t *n, const int64_t *k, const int64_t *d, float *dw,
                              int nthreads)
    int znn_fft_weight_grad_d(const double *xf, const double *gf, int64_t ni, int64_t no,
                              const int64_t *n, const int64_t *k, const int64_t *d, double *dw,
                              int nthreads)

#: False when built with ZNN_DONT_CACHE_FFTS=1: the engine then recomputes its kernel
#: spectra (kernel_spectra_yx) at every use instead of keeping them between passes.
CACHE_FFTS = not ZNN_DONT_CACHE_FFTS

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_C64, _C128 = np.dtype(np.complex64), np.dtype(np.complex128)
_COMPLEX_OF = {_F32: _C64, _F64: _C128}
_REAL_OF = {_C64: _F32, _C128: _F64}


def backend():
    """The FFT library compiled in: "mkl-dfti" (MKL DFTI) or "mkl-fftw3" (MKL's FFTW3 API)."""
    return znn_fft_backend().decode()


def clear_plan_cache():
    """Free every cached FFT plan not in use; return how many were freed."""
    return znn_fft_plan_cache_clear()


atexit.register(clear_plan_cache)


def plan_cache_size():
    """Number of FFT plans (descriptors) currently cached."""
    return znn_fft_plan_cache_size()


def _set_strategy(int strategy):
    """Threading of batched transforms (measurements only): 0 auto, 1 per map, 2 batched."""
    return znn_fft_set_strategy(strategy)


# ---------------------------------------------------------------- validation helpers

def _vec3(name, value, int minimum):
    try:
        t = tuple(_index(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be 3 integers (z, y, x), got {value!r}") from None
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 entries (z, y, x), got {value!r}")
    if min(t) < minimum:
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return t


def _array(name, a, int ndim, dtypes, what):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _real(name, a, int ndim, what, dtype=None):
    return _array(name, a, ndim, (dtype,) if dtype is not None else (_F32, _F64), what)


def _spectra(name, a, int ndim, what, dtype=None):
    return _array(name, a, ndim, (dtype,) if dtype is not None else (_C64, _C128), what)


def _output(name, out, shape, dtype, inputs, zero=False):
    if out is None:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    for a in inputs:
        if np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap the input arrays")
    return out


def _spectrum_shape(n):
    return (n[0], n[1], n[2] // 2 + 1)


def _check_fits(k, d, n, kname, dname):
    for a in range(3):
        if (k[a] - 1) * d[a] + 1 > n[a]:
            raise ValueError(f"{kname} {tuple(k)} dilated by {dname} {tuple(d)} spans "
                             f"{tuple((k[b] - 1) * d[b] + 1 for b in range(3))}, larger than "
                             f"fft_shape {tuple(n)}")


cdef inline void _fill(int64_t *dst, t):
    dst[0] = t[0]
    dst[1] = t[1]
    dst[2] = t[2]


cdef inline void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


# ---------------------------------------------------------------- transforms

def rfft(x, fft_shape, offset=(0, 0, 0), out=None, int nthreads=0):
    """Spectra of the maps x (B, a, b, c), each placed at `offset` in a zero volume of fft_shape.

    Returns complex (B, Z, Y, X//2+1) (complex64 for float32 x, complex128 for float64).
    """
    x = _real("x", x, 4, "(maps, z, y, x)")
    n = _vec3("fft_shape", fft_shape, 1)
    off = _vec3("offset", offset, 0)
    if any(off[a] + x.shape[1 + a] > n[a] for a in range(3)):
        raise ValueError(f"offset {off} + map shape {x.shape[1:]} exceeds fft_shape {n}")
    out = _output("out", out, (x.shape[0],) + _spectrum_shape(n), _COMPLEX_OF[x.dtype], (x,))
    cdef int64_t n_[3]
    cdef int64_t off_[3]
    cdef int64_t xs_[3]
    _fill(n_, n); _fill(off_, off); _fill(xs_, x.shape[1:])
    cdef int64_t B = x.shape[0]
    cdef void *px = _ptr(x)
    cdef void *po = _ptr(out)
    cdef int st
    if x.dtype == _F32:
        with nogil:
            st = znn_fft_rfft_s(<float *>px, B, xs_, n_, off_, <float *>po, nthreads)
    else:
        with nogil:
            st = znn_fft_rfft_d(<double *>px, B, xs_, n_, off_, <double *>po, nthreads)
    check(st)
    return out


def irfft(xf, fft_shape, offset, out_shape, out=None, double scale=1.0, bint accumulate=False,
          int nthreads=0):
    """out[b] (+)= scale * window [offset, offset+out_shape) of the inverse transform of xf[b].

    xf: complex (B, Z, Y, X//2+1) for fft_shape (Z, Y, X), not modified; out: real
    (B, *out_shape).  accumulate=True adds to `out` (which is then required).
    """
    xf = _spectra("xf", xf, 4, "(maps, z, y, x//2+1)")
    n = _vec3("fft_shape", fft_shape, 1)
    off = _vec3("offset", offset, 0)
    os = _vec3("out_shape", out_shape, 1)
    if xf.shape[1:] != _spectrum_shape(n):
        raise ValueError(f"xf has shape {xf.shape}; fft_shape {n} needs (B,) + "
                         f"{_spectrum_shape(n)}")
    if any(off[a] + os[a] > n[a] for a in range(3)):
        raise ValueError(f"offset {off} + out_shape {os} exceeds fft_shape {n}")
    if accumulate and out is None:
        raise ValueError("out is required when accumulate=True")
    out = _output("out", out, (xf.shape[0],) + os, _REAL_OF[xf.dtype], (xf,))
    cdef int64_t n_[3]
    cdef int64_t off_[3]
    cdef int64_t os_[3]
    _fill(n_, n); _fill(off_, off); _fill(os_, os)
    cdef int64_t B = xf.shape[0]
    cdef void *px = _ptr(xf)
    cdef void *po = _ptr(out)
    cdef int st
    if out.dtype == _F32:
        with nogil:
            st = znn_fft_irfft_s(<float *>px, B, n_, off_, os_, <float *>po, <float>scale,
                                 accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_irfft_d(<double *>px, B, n_, off_, os_, <double *>po, scale, accumulate,
                                 nthreads)
    check(st)
    return out


def _kernel_args(w, dilation, fft_shape):
    """Validated (w, dilation, fft_shape, ksize, n_in, n_out) of the kernel-spectra functions."""
    w = _real("w", w, 5, "(n_in, n_out, kz, ky, kx)")
    d = _vec3("dilation", dilation, 1)
    n = _vec3("fft_shape", fft_shape, 1)
    k = w.shape[2:]
    _check_fits(k, d, n, "kernel size", "dilation")
    return w, d, n, k, w.shape[0], w.shape[1]


def kernel_spectra(w, dilation, fft_shape, out=None, int nthreads=0):
    """Spectra of the kernels w (n_in, n_out, kz, ky, kx) dilated and zero-padded to fft_shape.

    Tap (a, b, c) sits at (a, b, c) * dilation.  Returns complex (n_in, n_out, Z, Y, X//2+1).
    """
    w, d, n, k, _, _ = _kernel_args(w, dilation, fft_shape)
    out = _output("out", out, w.shape[:2] + _spectrum_shape(n), _COMPLEX_OF[w.dtype], (w,))
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef int64_t P = w.shape[0] * w.shape[1]
    cdef void *pw = _ptr(w)
    cdef void *po = _ptr(out)
    cdef int st
    if w.dtype == _F32:
        with nogil:
            st = znn_fft_kernel_spectra_s(<float *>pw, P, k_, d_, n_, <float *>po, nthreads)
    else:
        with nogil:
            st = znn_fft_kernel_spectra_d(<double *>pw, P, k_, d_, n_, <double *>po, nthreads)
    check(st)
    return out


def _weight_grad_args(xf, gf, fft_shape, ksize, dilation, out):
    """Validate the arguments of weight_grad / weight_grad_z; returns them checked."""
    xf = _spectra("xf", xf, 4, "(n_in, z, y, x//2+1)")
    gf = _spectra("gf", gf, 4, "(n_out, z, y, x//2+1)", xf.dtype)
    n = _vec3("fft_shape", fft_shape, 1)
    k = _vec3("ksize", ksize, 1)
    d = _vec3("dilation", dilation, 1)
    sp = _spectrum_shape(n)
    if xf.shape[1:] != sp:
        raise ValueError(f"xf has shape {xf.shape}; fft_shape {n} needs (n_in,) + {sp}")
    if gf.shape[1:] != sp:
        raise ValueError(f"gf has shape {gf.shape}; fft_shape {n} needs (n_out,) + {sp}")
    _check_fits(k, d, n, "ksize", "dilation")
    out = _output("out", out, (xf.shape[0], gf.shape[0]) + k, _REAL_OF[xf.dtype], (xf, gf))
    return xf, gf, n, k, d, out


def weight_grad(xf, gf, fft_shape, ksize, dilation, out=None, int nthreads=0):
    """dW[i, j][w] = IFFT(gf[j] * conj(xf[i]))[w * dilation] / N for the taps w < ksize.

    xf: complex (n_in, Z, Y, X//2+1), gf: complex (n_out, ...) of the same dtype.
    Returns real (n_in, n_out, kz, ky, kx).
    """
    xf, gf, n, k, d, out = _weight_grad_args(xf, gf, fft_shape, ksize, dilation, out)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef int64_t ni = xf.shape[0], no = gf.shape[0]
    cdef void *px = _ptr(xf)
    cdef void *pg = _ptr(gf)
    cdef void *po = _ptr(out)
    cdef int st
    if out.dtype == _F32:
        with nogil:
            st = znn_fft_weight_grad_s(<float *>px, <float *>pg, ni, no, n_, k_, d_, <float *>po,
                                       nthreads)
    else:
        with nogil:
            st = znn_fft_weight_grad_d(<double *>px, <double *>pg, ni, no, n_, k_, d_,
                                       <double *>po, nthreads)
    check(st)
    return out


# ---------------------------------------------------------------- multiply-accumulate

def _mac_args(src_name, src, wf_name, wf, dst_name, dst, backward):
    """Validate (src, wf, dst) of a cached MAC; returns them and (ni, no, S)."""
    src = _spectra(src_name, src, 4, "(maps, z, y, x//2+1)")
    wf = _spectra(wf_name, wf, 5, "(n_in, n_out, z, y, x//2+1)", src.dtype)
    ni, no = wf.shape[0], wf.shape[1]
    nsrc, ndst = (no, ni) if backward else (ni, no)
    if src.shape != (nsrc,) + wf.shape[2:]:
        raise ValueError(f"{src_name} has shape {src.shape}; {wf_name} {wf.shape} needs "
                         f"{(nsrc,) + wf.shape[2:]}")
    if dst is None:
        raise TypeError(f"{dst_name} (the output spectra) is required")
    dst = _output(dst_name, dst, (ndst,) + wf.shape[2:], src.dtype, (src, wf))
    return src, wf, dst, ni, no, int(np.prod(wf.shape[2:]))


def mac_forward(xf, wf, yf, bint accumulate=False, int nthreads=0):
    """yf[j] (+)= sum_i xf[i] * wf[i, j]; xf (n_in, ...), wf (n_in, n_out, ...), yf (n_out, ...)."""
    xf, wf, yf, ni, no, S = _mac_args("xf", xf, "wf", wf, "yf", yf, False)
    cdef void *px = _ptr(xf)
    cdef void *pw = _ptr(wf)
    cdef void *py = _ptr(yf)
    cdef int64_t ni_ = ni, no_ = no, S_ = S
    cdef int st
    if yf.dtype == _C64:
        with nogil:
            st = znn_fft_mac_forward_s(<float *>px, <float *>pw, <float *>py, ni_, no_, S_,
                                       accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_mac_forward_d(<double *>px, <double *>pw, <double *>py, ni_, no_, S_,
                                       accumulate, nthreads)
    check(st)
    return yf


def mac_backward(gf, wf, dxf, bint accumulate=False, int nthreads=0):
    """dxf[i] (+)= sum_j gf[j] * conj(wf[i, j]); gf (n_out, ...), dxf (n_in, ...)."""
    gf, wf, dxf, ni, no, S = _mac_args("gf", gf, "wf", wf, "dxf", dxf, True)
    cdef void *pg = _ptr(gf)
    cdef void *pw = _ptr(wf)
    cdef void *pd = _ptr(dxf)
    cdef int64_t ni_ = ni, no_ = no, S_ = S
    cdef int st
    if dxf.dtype == _C64:
        with nogil:
            st = znn_fft_mac_backward_s(<float *>pg, <float *>pw, <float *>pd, ni_, no_, S_,
                                        accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_mac_backward_d(<double *>pg, <double *>pw, <double *>pd, ni_, no_, S_,
                                        accumulate, nthreads)
    check(st)
    return dxf


def _streamed_args(src_name, src, w, dilation, fft_shape, dst_name, dst, backward):
    src = _spectra(src_name, src, 4, "(maps, z, y, x//2+1)")
    w = _real("w", w, 5, "(n_in, n_out, kz, ky, kx)", _REAL_OF[src.dtype])
    d = _vec3("dilation", dilation, 1)
    n = _vec3("fft_shape", fft_shape, 1)
    k = w.shape[2:]
    _check_fits(k, d, n, "kernel size", "dilation")
    ni, no = w.shape[0], w.shape[1]
    nsrc, ndst = (no, ni) if backward else (ni, no)
    sp = _spectrum_shape(n)
    if src.shape != (nsrc,) + sp:
        raise ValueError(f"{src_name} has shape {src.shape}; w {w.shape} and fft_shape {n} "
                         f"need {(nsrc,) + sp}")
    if dst is None:
        raise TypeError(f"{dst_name} (the output spectra) is required")
    dst = _output(dst_name, dst, (ndst,) + sp, src.dtype, (src, w))
    return src, w, dst, k, d, n, ni, no


def mac_forward_streamed(xf, w, dilation, fft_shape, yf, bint accumulate=False, int nthreads=0):
    """mac_forward with each kernel spectrum computed on the fly from w (n_in, n_out, k)."""
    xf, w, yf, k, d, n, ni, no = _streamed_args("xf", xf, w, dilation, fft_shape, "yf", yf, False)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef void *px = _ptr(xf)
    cdef void *pw = _ptr(w)
    cdef void *py = _ptr(yf)
    cdef int64_t ni_ = ni, no_ = no
    cdef int st
    if yf.dtype == _C64:
        with nogil:
            st = znn_fft_mac_forward_streamed_s(<float *>px, <float *>pw, k_, d_, n_,
                                                <float *>py, ni_, no_, accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_mac_forward_streamed_d(<double *>px, <double *>pw, k_, d_, n_,
                                                <double *>py, ni_, no_, accumulate, nthreads)
    check(st)
    return yf


def mac_backward_streamed(gf, w, dilation, fft_shape, dxf, bint accumulate=False,
                          int nthreads=0):
    """mac_backward with each kernel spectrum computed on the fly from w (n_in, n_out, k)."""
    gf, w, dxf, k, d, n, ni, no = _streamed_args("gf", gf, w, dilation, fft_shape, "dxf", dxf,
                                                 True)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef void *pg = _ptr(gf)
    cdef void *pw = _ptr(w)
    cdef void *pd = _ptr(dxf)
    cdef int64_t ni_ = ni, no_ = no
    cdef int st
    if dxf.dtype == _C64:
        with nogil:
            st = znn_fft_mac_backward_streamed_s(<float *>pg, <float *>pw, k_, d_, n_,
                                                 <float *>pd, ni_, no_, accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_mac_backward_streamed_d(<double *>pg, <double *>pw, k_, d_, n_,
                                                 <double *>pd, ni_, no_, accumulate, nthreads)
    check(st)
    return dxf


# ---------------------------------------------------------------- z-factored (GEMM) kernels

cdef extern from "fft_zgemm.h" nogil:
    int znn_fft_zspectra_yx_s(const float *w, int64_t ni, int64_t no, const int64_t *k,
                              const int64_t *d, const int64_t *n, float *wyx, int compact,
                              int nthreads)
    int znn_fft_zspectra_yx_d(const double *w, int64_t ni, int64_t no, const int64_t *k,
                              const int64_t *d, const int64_t *n, double *wyx, int compact,
                              int nthreads)
    int znn_fft_zmac_forward_s(const float *xf, const float *wyx, float *yf, int64_t ni,
                               int64_t no, const int64_t *k, const int64_t *d, const int64_t *n,
                               int compact, int accumulate, int nthreads)
    int znn_fft_zmac_forward_d(const double *xf, const double *wyx, double *yf, int64_t ni,
                               int64_t no, const int64_t *k, const int64_t *d, const int64_t *n,
                               int compact, int accumulate, int nthreads)
    int znn_fft_zmac_backward_s(const float *gf, const float *wyx, float *dxf, int64_t ni,
                                int64_t no, const int64_t *k, const int64_t *d,
                                const int64_t *n, int compact, int accumulate, int nthreads)
    int znn_fft_zmac_backward_d(const double *gf, const double *wyx, double *dxf, int64_t ni,
                                int64_t no, const int64_t *k, const int64_t *d,
                                const int64_t *n, int compact, int accumulate, int nthreads)
    int znn_fft_zweight_grad_s(const float *xf, const float *gf, int64_t ni, int64_t no,
                               const int64_t *n, const int64_t *k, const int64_t *d, float *dw,
                               int nthreads)
    int znn_fft_zweight_grad_d(const double *xf, const double *gf, int64_t ni, int64_t no,
                               const int64_t *n, const int64_t *k, const int64_t *d, double *dw,
                               int nthreads)
    int znn_fft_zspectra_full_s(const float *w, int64_t ni, int64_t no, const int64_t *k,
                                const int64_t *d, const int64_t *n, float *wf, int nthreads)
    int znn_fft_zspectra_full_d(const double *w, int64_t ni, int64_t no, const int64_t *k,
                                const int64_t *d, const int64_t *n, double *wf, int nthreads)
    int znn_fft_bmac_s(const float *src, const float *wt, float *dst, int64_t ni, int64_t no,
                       int64_t P, int64_t F, int backward, int accumulate, int nthreads)
    int znn_fft_bmac_d(const double *src, const double *wt, double *dst, int64_t ni,
                       int64_t no, int64_t P, int64_t F, int backward, int accumulate,
                       int nthreads)
    int64_t znn_fft_zgemm_release_scratch()
    int64_t znn_fft_zgemm_scratch_bytes()


def release_zgemm_scratch():
    """Free the scratch block weight_grad_z keeps between calls (if idle); returns its bytes."""
    return znn_fft_zgemm_release_scratch()


def zgemm_scratch_bytes():
    """Bytes of the scratch block weight_grad_z keeps between calls (0 when none)."""
    return znn_fft_zgemm_scratch_bytes()


def _wyx_shape(n, k, ni, no, compact=False):
    """Shape of kernel_spectra_yx's result (planes, Z == 1, are computed with y as z)."""
    if n[0] == 1:
        return (n[2] // 2 + 1, k[1] * ni, no)
    return ((k[1] if compact else n[1]) * (n[2] // 2 + 1), k[0] * ni, no)


def kernel_spectra_yx(w, dilation, fft_shape, out=None, int nthreads=0, bint compact=False):
    """Partial (y and x only) spectra of the kernels w (n_in, n_out, kz, ky, kx).

    Returns complex (Y*(X//2+1), kz*n_in, n_out): entry [fy*(X//2+1) + fx, a*n_in + i, j] is
    sum_{b,c} w[i, j, a, b, c] exp(-2 pi i (fy b dy / Y + fx c dx / X)), the cache of
    zmac_forward / zmac_backward (kz/Z of the size of kernel_spectra's result).  For planes
    (fft_shape Z == 1) y takes the role of z: (X//2+1, ky*n_in, n_out), ky/Y of the size.
    compact=True: the x stage only, (ky*(X//2+1), kz*n_in, n_out), entry [b*(X//2+1) + fx,
    a*n_in + i, j] = sum_c w[i, j, a, b, c] exp(-2 pi i fx c dx / X) (ky/Y of the size); pass
    compact=True to the MACs too, which then apply the y stage block by block in cache.
    """
    w, d, n, k, ni, no = _kernel_args(w, dilation, fft_shape)
    out = _output("out", out, _wyx_shape(n, k, ni, no, compact), _COMPLEX_OF[w.dtype], (w,))
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef int64_t ni_ = ni, no_ = no
    cdef void *pw = _ptr(w)
    cdef void *po = _ptr(out)
    cdef int st
    if w.dtype == _F32:
        with nogil:
            st = znn_fft_zspectra_yx_s(<float *>pw, ni_, no_, k_, d_, n_, <float *>po, compact,
                                       nthreads)
    else:
        with nogil:
            st = znn_fft_zspectra_yx_d(<double *>pw, ni_, no_, k_, d_, n_, <double *>po,
                                       compact, nthreads)
    check(st)
    return out


def _zmac_args(src_name, src, wyx, ksize, dilation, fft_shape, dst_name, dst, backward,
               compact):
    """Validate the arguments of zmac_forward / zmac_backward; returns them and (ni, no)."""
    n = _vec3("fft_shape", fft_shape, 1)
    k = _vec3("ksize", ksize, 1)
    d = _vec3("dilation", dilation, 1)
    _check_fits(k, d, n, "ksize", "dilation")
    src = _spectra(src_name, src, 4, "(maps, z, y, x//2+1)")
    wyx = _spectra("wyx", wyx, 3, "(Y*(X//2+1), kz*n_in, n_out)", src.dtype)
    sp = _spectrum_shape(n)
    C, kk, _ = _wyx_shape(n, k, 1, 1, compact)
    if wyx.shape[0] != C or wyx.shape[1] % kk:
        raise ValueError(f"wyx has shape {wyx.shape}; fft_shape {n} and ksize {k} need "
                         f"({C}, {kk}*n_in, n_out)")
    ni, no = wyx.shape[1] // kk, wyx.shape[2]
    nsrc, ndst = (no, ni) if backward else (ni, no)
    if src.shape != (nsrc,) + sp:
        raise ValueError(f"{src_name} has shape {src.shape}; wyx {wyx.shape} and fft_shape {n} "
                         f"need {(nsrc,) + sp}")
    if dst is None:
        raise TypeError(f"{dst_name} (the output spectra) is required")
    dst = _output(dst_name, dst, (ndst,) + sp, src.dtype, (src, wyx))
    return src, wyx, dst, k, d, n, ni, no


def zmac_forward(xf, wyx, ksize, dilation, fft_shape, yf, bint accumulate=False,
                 int nthreads=0, bint compact=False):
    """yf[j] (+)= sum_i xf[i] * Wf[i, j] from the partial spectra wyx = kernel_spectra_yx(w, ..).

    xf (n_in, Z, Y, X//2+1), yf (n_out, ...) complex of one dtype; ksize / dilation / fft_shape
    as given to kernel_spectra_yx.  Same result as mac_forward(xf, kernel_spectra(w, ..), yf).
    """
    xf, wyx, yf, k, d, n, ni, no = _zmac_args("xf", xf, wyx, ksize, dilation, fft_shape, "yf",
                                              yf, False, compact)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef void *px = _ptr(xf)
    cdef void *pw = _ptr(wyx)
    cdef void *py = _ptr(yf)
    cdef int64_t ni_ = ni, no_ = no
    cdef int st
    if yf.dtype == _C64:
        with nogil:
            st = znn_fft_zmac_forward_s(<float *>px, <float *>pw, <float *>py, ni_, no_, k_, d_,
                                        n_, compact, accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_zmac_forward_d(<double *>px, <double *>pw, <double *>py, ni_, no_, k_,
                                        d_, n_, compact, accumulate, nthreads)
    check(st)
    return yf


def zmac_backward(gf, wyx, ksize, dilation, fft_shape, dxf, bint accumulate=False,
                  int nthreads=0, bint compact=False):
    """dxf[i] (+)= sum_j gf[j] * conj(Wf[i, j]) from the partial spectra wyx.

    gf (n_out, Z, Y, X//2+1), dxf (n_in, ...).  Same result as mac_backward(gf, wf, dxf).
    """
    gf, wyx, dxf, k, d, n, ni, no = _zmac_args("gf", gf, wyx, ksize, dilation, fft_shape, "dxf",
                                               dxf, True, compact)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef void *pg = _ptr(gf)
    cdef void *pw = _ptr(wyx)
    cdef void *pd = _ptr(dxf)
    cdef int64_t ni_ = ni, no_ = no
    cdef int st
    if dxf.dtype == _C64:
        with nogil:
            st = znn_fft_zmac_backward_s(<float *>pg, <float *>pw, <float *>pd, ni_, no_, k_, d_,
                                         n_, compact, accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_zmac_backward_d(<double *>pg, <double *>pw, <double *>pd, ni_, no_, k_,
                                         d_, n_, compact, accumulate, nthreads)
    check(st)
    return dxf


def weight_grad_z(xf, gf, fft_shape, ksize, dilation, out=None, int nthreads=0):
    """weight_grad computed with complex GEMMs (z taps per column, then y, then x stages).

    xf: complex (n_in, Z, Y, X//2+1), gf: complex (n_out, ...) of the same dtype.
    Returns real (n_in, n_out, kz, ky, kx): IFFT(gf[j] * conj(xf[i]))[w * dilation] / N.
    """
    xf, gf, n, k, d, out = _weight_grad_args(xf, gf, fft_shape, ksize, dilation, out)
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef int64_t ni = xf.shape[0], no = gf.shape[0]
    cdef void *px = _ptr(xf)
    cdef void *pg = _ptr(gf)
    cdef void *po = _ptr(out)
    cdef int st
    if out.dtype == _F32:
        with nogil:
            st = znn_fft_zweight_grad_s(<float *>px, <float *>pg, ni, no, n_, k_, d_,
                                        <float *>po, nthreads)
    else:
        with nogil:
            st = znn_fft_zweight_grad_d(<double *>px, <double *>pg, ni, no, n_, k_, d_,
                                        <double *>po, nthreads)
    check(st)
    return out


def bmac(src, wt, dst=None, bint backward=False, bint accumulate=False, int nthreads=0):
    """Blocked MAC: P blocks sharing the frequency-major kernel spectra wt (F, n_in, n_out).

    Forward: dst[j, p, f] (+)= sum_i src[i, p, f] * wt[f, i, j], src (n_in, P, F) -> dst
    (n_out, P, F).  backward=True: dst[i, p, f] (+)= sum_j src[j, p, f] * conj(wt[f, i, j]),
    src (n_out, P, F) -> dst (n_in, P, F).  One complex GEMM with P rows per frequency.
    """
    src = _spectra("src", src, 3, "(maps, blocks, frequencies)")
    wt = _spectra("wt", wt, 3, "(frequencies, n_in, n_out)", src.dtype)
    F, ni, no = wt.shape
    ns, nd = (no, ni) if backward else (ni, no)
    if src.shape[0] != ns or src.shape[2] != F:
        raise ValueError(f"src has shape {src.shape}; wt {wt.shape} needs ({ns}, blocks, {F})")
    P = src.shape[1]
    dst = _output("dst", dst, (nd, P, F), src.dtype, (src, wt), zero=accumulate)
    cdef void *ps = _ptr(src)
    cdef void *pw = _ptr(wt)
    cdef void *pd = _ptr(dst)
    cdef int64_t ni_ = ni, no_ = no, P_ = P, F_ = F
    cdef int st
    if dst.dtype == _C64:
        with nogil:
            st = znn_fft_bmac_s(<float *>ps, <float *>pw, <float *>pd, ni_, no_, P_, F_,
                                backward, accumulate, nthreads)
    else:
        with nogil:
            st = znn_fft_bmac_d(<double *>ps, <double *>pw, <double *>pd, ni_, no_, P_, F_,
                                backward, accumulate, nthreads)
    check(st)
    return dst


def kernel_spectra_fm(w, dilation, fft_shape, int nthreads=0):
    """kernel_spectra's result frequency-major: complex (Z*Y*(X//2+1), n_in, n_out), entry
    [s, i, j] the spectrum of kernel (i, j) at flat frequency s (the wt of bmac)."""
    w, d, n, k, ni, no = _kernel_args(w, dilation, fft_shape)
    S = n[0] * n[1] * (n[2] // 2 + 1)
    out = np.empty((S, ni, no), _COMPLEX_OF[w.dtype])
    cdef int64_t n_[3]
    cdef int64_t d_[3]
    cdef int64_t k_[3]
    _fill(n_, n); _fill(d_, d); _fill(k_, k)
    cdef int64_t ni_ = ni, no_ = no
    cdef void *pw = _ptr(w)
    cdef void *po = _ptr(out)
    cdef int st
    if w.dtype == _F32:
        with nogil:
            st = znn_fft_zspectra_full_s(<float *>pw, ni_, no_, k_, d_, n_, <float *>po, nthreads)
    else:
        with nogil:
            st = znn_fft_zspectra_full_d(<double *>pw, ni_, no_, k_, d_, n_, <double *>po,
                                         nthreads)
    check(st)
    return out
