/* Direct (spatial) dilated "valid" convolution: forward, backward-data, backward-weight.
 *
 * Shapes (all arrays C-contiguous, owned by the caller, x fastest):
 *   x, dx : (n_in,  Z,  Y,  X)      in  = (Z, Y, X)
 *   w, dw : (n_in, n_out, kz, ky, kx)   T = kz*ky*kx taps, tap index t = (wz*ky + wy)*kx + wx
 *   y, g  : (n_out, Z', Y', X')     out = in - (k-1)*d  (element-wise, every entry >= 1)
 * Math (true convolution, the kernel is flipped; o(t) = (k-1-w)*d element-wise):
 *   forward          y[j,p]              = sum_i sum_t x[i, p + o(t)] * w[i,j,t]
 *   backward_data    dx[i, p + o(t)]    += g[j,p] * w[i,j,t]          (full convolution)
 *   backward_weight  dw[i,j,t]           = sum_p g[j,p] * x[i, p + o(t)]
 * With accumulate != 0 the result is added to the output array, otherwise it overwrites it.
 * The output must not overlap the inputs.
 *
 * Implementation (chosen at build time by ZNN_USE_MKL_DIRECT_CONV):
 *   1: per-tap GEMM accumulation on MKL BLAS over the input's flat index ("wide" rows that
 *      run over the whole input row, so every tap is one GEMM with a constant offset);
 *      OpenMP over column chunks, MKL single-threaded inside; scratch bounded (~64 MB).
 *      Within it, backward data on small patches with large dilations runs as a scatter of
 *      compact products (direct_scatter.inc), and float layers with few maps run on
 *      register-blocked kernels (direct_narrow.h); direct.c says when.
 *   0: plain C loops (inner loop over x, vectorisable), OpenMP over output maps/slices.
 * Environment variables, read on every call (tests use them): ZNN_DIRECT_CHUNK (columns per
 * GEMM chunk) forces many tiny chunks; ZNN_DIRECT_BACKWARD_DATA=gather|scatter and
 * ZNN_DIRECT_NARROW=0|1 force a form; ZNN_NARROW_WIDTH=16|8|4 picks the narrow kernels'
 * vector width (at most the CPU's).
 *
 * Threads: nthreads <= 0 means every core.  Work is split into pieces that do not depend on
 * the thread count, and each output element is reduced by one thread in a fixed order, so the
 * result does not depend on nthreads.  The functions are re-entrant (no global state).
 *
 * Status: ZNN_OK, ZNN_ERR_ARG (bad shapes; the caller validates first), ZNN_ERR_NOMEM,
 * ZNN_ERR_INTERNAL; the message is available through znn_error_message().
 */
#ifndef ZNN_DIRECT_H
#define ZNN_DIRECT_H

#include <stdint.h>

#include "common.h"

/* in_shape, k, d: 3-vectors (z, y, x). */
int znn_direct_forward_s(const float *x, const float *w, float *y, int64_t n_in, int64_t n_out,
                         const int64_t *in_shape, const int64_t *k, const int64_t *d,
                         int accumulate, int nthreads);
int znn_direct_forward_d(const double *x, const double *w, double *y, int64_t n_in,
                         int64_t n_out, const int64_t *in_shape, const int64_t *k,
                         const int64_t *d, int accumulate, int nthreads);

int znn_direct_backward_data_s(const float *g, const float *w, float *dx, int64_t n_in,
                               int64_t n_out, const int64_t *in_shape, const int64_t *k,
                               const int64_t *d, int accumulate, int nthreads);
int znn_direct_backward_data_d(const double *g, const double *w, double *dx, int64_t n_in,
                               int64_t n_out, const int64_t *in_shape, const int64_t *k,
                               const int64_t *d, int accumulate, int nthreads);

int znn_direct_backward_weight_s(const float *x, const float *g, float *dw, int64_t n_in,
                                 int64_t n_out, const int64_t *in_shape, const int64_t *k,
                                 const int64_t *d, int accumulate, int nthreads);
int znn_direct_backward_weight_d(const double *x, const double *g, double *dw, int64_t n_in,
                                 int64_t n_out, const int64_t *in_shape, const int64_t *k,
                                 const int64_t *d, int accumulate, int nthreads);

/* 1 when built with ZNN_USE_MKL_DIRECT_CONV (GEMM lowering), 0 for the plain loops. */
int znn_direct_uses_mkl(void);

#endif
