/* FFT convolution kernels of znn (valid, dilated, true convolution computed with FFTs).
 *
 * Notation: n = (Z, Y, X) is the FFT size (the input map size), N = Z*Y*X, S = Z*Y*(X/2+1)
 * the number of complex values of a half spectrum; spectra are interleaved (re, im),
 * C-contiguous (maps, Z, Y, X/2+1).  K = (kz, ky, kx) a kernel size, d a dilation; the
 * dilated kernel W[w] sits at w*d (element-wise) with W[0,0,0] at the origin, so
 * (K-1)*d + 1 <= n on every axis.  All transforms are unnormalised.
 *
 *   forward        y[j] = crop_[(K-1)d, n) ( IFFT( sum_i X_i * Wf_ij ) / N )
 *   backward data  dx[i] = IFFT( sum_j G_j * conj(Wf_ij) ) / N,  G = FFT(g placed at (K-1)d)
 *   weight grad    dW[i,j][w] = IFFT( G_j * conj(X_i) )[w*d] / N
 *
 * Every function has a float (_s) and a double (_d) version; REAL below stands for float
 * or double, complex arrays are REAL* with 2 values per entry.  Arrays are owned by the
 * caller, must not overlap (unless stated) and must be C-contiguous.  `nthreads` <= 0 means
 * every core.  Outputs are written by exactly one thread each, summing in a fixed order,
 * so results do not depend on the thread count (exception: rfft/irfft of fewer maps than
 * threads use one MKL-threaded batched transform, which may round differently from the
 * single-threaded per-map transforms; see znn_fft_set_strategy).  Each function may be
 * called from several threads at once (plans come from the locked cache of fft_plan.h;
 * scratch is per call).
 * Returns ZNN_OK, ZNN_ERR_ARG, ZNN_ERR_NOMEM or ZNN_ERR_MKL (message via znn_fail).
 */
#ifndef ZNN_FFT_KERNELS_H
#define ZNN_FFT_KERNELS_H

#include "fft_plan.h"

/* Hot loops are built per ISA (ZNN_CLONES, common.h).  The spectral multiply-accumulates
 * use explicit fma() so that every element rounds alike wherever a call range starts. */

#define ZNN_FFT_DECLARE(REAL, SFX)                                                            \
/* out[b] = FFT of x[b] (shape xs) placed at `off` in a zero volume of shape n.             \
 * x: (B, xs), out: (B, S) complex.  Needs off + xs <= n. */                                \
int znn_fft_rfft##SFX(const REAL *x, int64_t B, const int64_t xs[3], const int64_t n[3],    \
                      const int64_t off[3], REAL *out, int nthreads);                       \
/* out[b] (+)= scale * IFFT(xf[b])[off : off+os].  xf: (B, S) complex (not modified),       \
 * out: (B, os).  Needs off + os <= n. */                                                    \
int znn_fft_irfft##SFX(const REAL *xf, int64_t B, const int64_t n[3], const int64_t off[3],  \
                       const int64_t os[3], REAL *out, REAL scale, int accumulate,          \
                       int nthreads);                                                        \
/* wf[p] = FFT of kernel w[p] (shape k) dilated by d, zero-padded to n, computed as         \
 * separable DFTs over the taps only (cost ~ kz * S per kernel instead of a full FFT).      \
 * w: (P, k), wf: (P, S) complex, P = n_in * n_out.  Parallel over kernels. */               \
int znn_fft_kernel_spectra##SFX(const REAL *w, int64_t P, const int64_t k[3],                \
                                const int64_t d[3], const int64_t n[3], REAL *wf,            \
                                int nthreads);                                               \
/* yf[j] (+)= sum_i xf[i] * wf[i, j].  xf: (ni, S), wf: (ni, no, S), yf: (no, S).           \
 * Blocked over frequencies; parallel over (block, j); sums over i in increasing order. */  \
int znn_fft_mac_forward##SFX(const REAL *xf, const REAL *wf, REAL *yf, int64_t ni,          \
                             int64_t no, int64_t S, int accumulate, int nthreads);           \
/* dxf[i] (+)= sum_j gf[j] * conj(wf[i, j]).  gf: (no, S), wf: (ni, no, S), dxf: (ni, S).  \
 * Parallel over (block, i); sums over j in increasing order. */                            \
int znn_fft_mac_backward##SFX(const REAL *gf, const REAL *wf, REAL *dxf, int64_t ni,        \
                              int64_t no, int64_t S, int accumulate, int nthreads);          \
/* As mac_forward / mac_backward (same sums, same order), but each wf[i, j] is computed on  \
 * the fly from the kernels w: (ni, no, k) (dilation d, FFT size n) in per-thread scratch:   \
 * memory O(threads * S) instead of O(ni * no * S).  Parallel over outputs when there are   \
 * at least as many as threads, otherwise over inputs in chunks then over blocks. */         \
int znn_fft_mac_forward_streamed##SFX(const REAL *xf, const REAL *w, const int64_t k[3],    \
                                      const int64_t d[3], const int64_t n[3], REAL *yf,      \
                                      int64_t ni, int64_t no, int accumulate, int nthreads); \
int znn_fft_mac_backward_streamed##SFX(const REAL *gf, const REAL *w, const int64_t k[3],   \
                                       const int64_t d[3], const int64_t n[3], REAL *dxf,    \
                                       int64_t ni, int64_t no, int accumulate,               \
                                       int nthreads);                                        \
/* dw[i, j] = IFFT(gf[j] * conj(xf[i]))[w*d] / N for the K taps w: the inverse transform   \
 * is evaluated at the K lattice points only (separable sums in double, cost ~ (1 + ky) * S \
 * per pair).  xf: (ni, S), gf: (no, S), dw: (ni, no, k) real.  Parallel over pairs. */      \
int znn_fft_weight_grad##SFX(const REAL *xf, const REAL *gf, int64_t ni, int64_t no,        \
                             const int64_t n[3], const int64_t k[3], const int64_t d[3],     \
                             REAL *dw, int nthreads);                                        \
/* Internal (shared by the kernel files): spectrum of one dilated kernel w (shape k), by     \
 * separable direct DFTs over the taps (exact zero padding, no FFT): `tw` from              \
 * znn_fft_twiddles(n), `work` of znn_fft_kernel_work(k, n) REALs. */                       \
void znn_fft_kernel_spectrum_one##SFX(const REAL *w, const int64_t k[3], const int64_t d[3], \
                                      const int64_t n[3], const REAL *tw, REAL *work,         \
                                      REAL *out);                                             \
/* The same in two steps: prepare (x and y stages into `work`), then z plane kz of the      \
 * spectrum (Y * (X/2+1) complex values): returned pointer, `buf` or inside `work`.         \
 * For a kernel of depth 1 with plane0 != NULL, prepare writes the (only) plane to plane0 \
 * instead, and znn_fft_kernel_plane must not be used. */                                    \
void znn_fft_kernel_prepare##SFX(const REAL *w, const int64_t k[3], const int64_t d[3],      \
                                 const int64_t n[3], const REAL *tw, REAL *work,             \
                                 REAL *plane0);                                              \
const REAL *znn_fft_kernel_plane##SFX(int64_t kz, const int64_t k[3], const int64_t d[3],   \
                                      const int64_t n[3], const REAL *tw, const REAL *work,   \
                                      REAL *buf);                                             \
/* Twiddle tables for n (caller frees with znn_free): n0 + n1 + n2 complex values, axis a   \
 * from offset n0 + .. + n(a-1), entry m = exp(-2 pi i m / n[a]).  NULL when out of memory. */\
REAL *znn_fft_twiddles##SFX(const int64_t n[3]);

ZNN_FFT_DECLARE(float, _s)
ZNN_FFT_DECLARE(double, _d)

/* REALs of scratch used by znn_fft_kernel_spectrum_one. */
int64_t znn_fft_kernel_work(const int64_t k[3], const int64_t n[3]);

#endif
