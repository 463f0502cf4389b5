/* Z-factored spectral convolution: every heavy step is a complex GEMM per (fy, fx) column.
 *
 * Notation as fft_kernels.h: n = (Z, Y, X) the FFT size, Xh = X/2+1, C = Y*Xh columns
 * c = fy*Xh + fx, S = Z*C; spectra are complex (maps, Z, Y, Xh), C-contiguous, interleaved
 * (re, im).  Kernels w (ni, no, kz, ky, kx) real, dilation d, with (k-1)*d+1 <= n per axis.
 * tz(fz, a) = exp(-2 pi i fz a dz / Z).
 *
 * Partial ("yx") kernel spectra, the cache of a layer (kz/Z of the full spectra's size):
 *   Wyx[c][a*ni + i][j] = sum_{b, c'} w[i, j, a, b, c'] e^{-2 pi i (fy b dy/Y + fx c' dx/X)},
 * complex (C, kz*ni, no), so that the full spectrum of znn_fft_kernel_spectra is
 *   Wf[i, j, fz, c] = sum_a tz(fz, a) Wyx[c][a*ni + i][j].
 * Planes (Z == 1, so kz == 1) are computed as the volume (Y, 1, X) with kernel (ky, 1, kx)
 * and dilation (dy, 1, dx), which has the same memory layout: y takes the role of z, so
 * there Wyx is (Xh, ky*ni, no) (ky/Y of the full spectra) and the GEMMs have Y rows.
 *
 * Every function has a float (_s) and a double (_d) version (REAL = float / double; complex
 * arrays are REAL* with 2 values per entry).  Arrays are owned by the caller, must be
 * C-contiguous and must not overlap.  `nthreads` <= 0 means every core.  Work is split into
 * fixed tasks (column blocks, fx columns or row chunks, sized from the shapes only), each
 * run by one OpenMP thread calling MKL single-threaded (mkl_set_num_threads_local(1), restored
 * after) on 64-byte aligned scratch: results do not depend on the thread count.  The env var
 * ZNN_ZGEMM_CHUNK=m (read per call; tests and tuning) forces every task size to m.
 * Thread-safety: any number of calls may run at once.
 * Scratch: zspectra_yx and the MACs ~1 MiB per thread, per call; zweight_grad also one block
 * of (ni + no)*S complex (the inputs transposed to column-major) + Xh*ni*no*kz*ky complex
 * (the y-stage result), which is kept for the next call (one block process-wide, the largest
 * idle one up to 1 GiB; a concurrent call allocates its own) to avoid faulting its pages in
 * again: see znn_fft_zgemm_release_scratch.
 * Returns ZNN_OK, ZNN_ERR_ARG (bad shape, or a GEMM dimension over INT_MAX) or ZNN_ERR_NOMEM,
 * with a message via znn_fail.
 */
#ifndef ZNN_FFT_ZGEMM_H
#define ZNN_FFT_ZGEMM_H

#include "common.h"

#define ZNN_FFT_ZGEMM_DECLARE(REAL, SFX)                                                      \
/* wyx = Wyx of the kernels w (ni, no, k) dilated by d for FFT size n: complex              \
 * (Y*Xh, k[0]*ni, no), or (Xh, k[1]*ni, no) when n[0] == 1.  Per chunk of kernel rows: an   \
 * x-stage GEMM over the kx taps, then a y-stage GEMM over the ky taps per fx.              \
 * compact = 1: the x stage only, (ky*Xh, k[0]*ni, no) (ky/Y of the size; (Xh, k[1]*ni, no)  \
 * when n[0] == 1); the MACs then apply the y stage per column block in cache. */           \
int znn_fft_zspectra_yx##SFX(const REAL *w, int64_t ni, int64_t no, const int64_t k[3],     \
                             const int64_t d[3], const int64_t n[3], REAL *wyx, int compact,\
                             int nthreads);                                                  \
/* yf[j] (+)= sum_i xf[i] * Wf[i, j].  xf: (ni, S), wyx from zspectra_yx(k, d, n), yf:      \
 * (no, S).  Per column: Y_c (Z x no) = A_c (Z x kz*ni) @ Wyx[c] with                       \
 * A_c[fz][a*ni + i] = xf[i, fz, c] tz(fz, a) (for kz == 1 one batched GEMM per block). */   \
int znn_fft_zmac_forward##SFX(const REAL *xf, const REAL *wyx, REAL *yf, int64_t ni,        \
                              int64_t no, const int64_t k[3], const int64_t d[3],           \
                              const int64_t n[3], int compact, int accumulate,              \
                              int nthreads);                                                \
/* dxf[i] (+)= sum_j gf[j] * conj(Wf[i, j]).  gf: (no, S), dxf: (ni, S).  Per column:       \
 * D_c = G_c (Z x no) @ Wyx[c]^H, then dxf[i, fz, c] = sum_a conj(tz(fz, a)) D_c[fz][a*ni+i]. */\
int znn_fft_zmac_backward##SFX(const REAL *gf, const REAL *wyx, REAL *dxf, int64_t ni,      \
                               int64_t no, const int64_t k[3], const int64_t d[3],          \
                               const int64_t n[3], int compact, int accumulate,             \
                               int nthreads);                                               \
/* dw[i, j] = IFFT(gf[j] * conj(xf[i]))[w*d] / N at the K taps w (as znn_fft_weight_grad).  \
 * xf: (ni, S), gf: (no, S), dw: (ni, no, k) real.  Per column a GEMM                        \
 * T_c = X_c^H (ni x Z) @ Gt_c (Z x kz*no) with the z taps' twiddles in Gt_c, then per fx a \
 * y-stage GEMM over fy (in chunks), then an x-stage GEMM over the half spectrum (Hermitian  \
 * weights 1 / 2, real part). */                                                             \
int znn_fft_zweight_grad##SFX(const REAL *xf, const REAL *gf, int64_t ni, int64_t no,       \
                              const int64_t n[3], const int64_t k[3], const int64_t d[3],   \
                              REAL *dw, int nthreads);                                    \
/* Blocked (overlap-save) convolution: P blocks share the kernel spectra of one block size, \
 * F frequencies each, kept frequency-major: wt (F, ni, no) complex.  Forward (backward=0): \
 * dst[j, p, f] (+)= sum_i src[i, p, f] * wt[f, i, j], src (ni, P, F), dst (no, P, F);       \
 * backward: dst[i, p, f] (+)= sum_j src[j, p, f] * conj(wt[f, i, j]), src (no, P, F),      \
 * dst (ni, P, F).  One GEMM per frequency with P rows, batched over blocks of frequencies. */\
/* Full kernel spectra, frequency-major: wf (Z*Y*Xh, ni, no) complex, entry [s][i][j] the   \
 * spectrum of kernel (i, j) at frequency s = (fz*Y + fy)*Xh + fx (the block spectra of     \
 * bmac); zspectra_yx followed by the z stage as one GEMM per column. */                    \
int znn_fft_zspectra_full##SFX(const REAL *w, int64_t ni, int64_t no, const int64_t k[3],   \
                               const int64_t d[3], const int64_t n[3], REAL *wf,            \
                               int nthreads);                                               \
int znn_fft_bmac##SFX(const REAL *src, const REAL *wt, REAL *dst, int64_t ni, int64_t no,   \
                      int64_t P, int64_t F, int backward, int accumulate, int nthreads);

ZNN_FFT_ZGEMM_DECLARE(float, _s)
ZNN_FFT_ZGEMM_DECLARE(double, _d)

/* Free the kept weight-gradient scratch block if idle; returns the bytes freed. */
int64_t znn_fft_zgemm_release_scratch(void);
/* Bytes of the kept block (0 when none). */
int64_t znn_fft_zgemm_scratch_bytes(void);

#endif
