/* Element-wise kernels: transfer functions, bias gradients, dropout, maxout, add/scale.
 *
 * Arrays are C-contiguous and owned by the caller; "n" is the number of elements per
 * channel, "total" the number of elements of the whole array.  Every function exists for
 * float (_s) and double (_d).  Work is cut into fixed blocks independent of the thread count,
 * so results never depend on `nthreads` (<= 0: every core).  Re-entrant.
 * Status: ZNN_OK, ZNN_ERR_ARG (unknown function code, bad keep / k), ZNN_ERR_NOMEM.
 *
 * Transfer functions (code: f(x); f' written with the OUTPUT f):
 *   0 linear            a*x + b              a
 *   1 rectify_linear    max(0, x)            1 if f > 0 else 0
 *   2 tanh              a*tanh(b*x)          (b/a)(a - f)(a + f)
 *   3 logistics         1/(1 + exp(-x))      f(1 - f)
 *   4 forward_logistics 1/(1 + exp(-x))      none: the gradient passes unchanged
 *   5 soft_sign         x/(1 + |x|)          (1 - |f|)^2
 * tanh and exp come from MKL VML (high-accuracy mode); the logistic is evaluated as
 * e/(1+e) or 1/(1+e) with e = exp(-|x|), so it never overflows and keeps relative accuracy
 * for large negative x.
 */
#ifndef ZNN_POINTWISE_H
#define ZNN_POINTWISE_H

#include <stdint.h>

enum {
    ZNN_FN_LINEAR = 0,
    ZNN_FN_RECTIFY_LINEAR = 1,
    ZNN_FN_TANH = 2,
    ZNN_FN_LOGISTICS = 3,
    ZNN_FN_FORWARD_LOGISTICS = 4,
    ZNN_FN_SOFT_SIGN = 5,
    ZNN_FN_COUNT = 6
};

/* Largest k accepted by maxout (argidx is uint8). */
#define ZNN_MAXOUT_MAX 255

/* x (C, n) in place: x[c, i] = f(x[c, i] + bias[c]); bias may be NULL (no bias). */
int znn_transfer_forward_s(float *x, int64_t C, int64_t n, const float *bias, int func,
                           double a, double b, int nthreads);
int znn_transfer_forward_d(double *x, int64_t C, int64_t n, const double *bias, int func,
                           double a, double b, int nthreads);

/* g (total) in place: g *= f'(y) with y the forward OUTPUT (same shape). */
int znn_transfer_backward_s(float *g, const float *y, int64_t total, int func, double a,
                            double b, int nthreads);
int znn_transfer_backward_d(double *g, const double *y, int64_t total, int func, double a,
                            double b, int nthreads);

/* g (C, n) in place: g *= f'(y), and sums[c] = sum_i g[c, i] after that (as
 * znn_transfer_backward followed by znn_channel_sum, with the same result, in one pass). */
int znn_transfer_backward_sum_s(float *g, const float *y, int64_t C, int64_t n, int func,
                                double a, double b, double *sums, int nthreads);
int znn_transfer_backward_sum_d(double *g, const double *y, int64_t C, int64_t n, int func,
                                double a, double b, double *sums, int nthreads);

/* out[c] = sum_i g[c, i], accumulated in double in a fixed order. */
int znn_channel_sum_s(const float *g, int64_t C, int64_t n, double *out, int nthreads);
int znn_channel_sum_d(const double *g, int64_t C, int64_t n, double *out, int nthreads);

/* Bernoulli(keep) mask of element i: a 64-bit mixing hash of (seed, i) compared with
 * keep * 2^32; depends only on (seed, i, keep).  0 < keep <= 1.
 * y = x * mask / keep, evaluated in that order (y may alias x); mask may be NULL. */
int znn_dropout_forward_s(const float *x, int64_t total, double keep, uint64_t seed, float *y,
                          uint8_t *mask, int nthreads);
int znn_dropout_forward_d(const double *x, int64_t total, double keep, uint64_t seed,
                          double *y, uint8_t *mask, int nthreads);
/* out = g * mask / keep (out may alias g). */
int znn_dropout_backward_s(const float *g, const uint8_t *mask, int64_t total, double keep,
                           float *out, int nthreads);
int znn_dropout_backward_d(const double *g, const uint8_t *mask, int64_t total, double keep,
                           double *out, int nthreads);
/* The mask alone (1 = kept). */
int znn_dropout_mask(int64_t total, double keep, uint64_t seed, uint8_t *mask, int nthreads);

/* xs: k pointers to arrays of `total` elements, 1 <= k <= 255.
 * y = element-wise max, argidx = index of the winning array; ties: the later array wins. */
int znn_maxout_forward_s(const float *const *xs, int k, int64_t total, float *y,
                         uint8_t *argidx, int nthreads);
int znn_maxout_forward_d(const double *const *xs, int k, int64_t total, double *y,
                         uint8_t *argidx, int nthreads);
/* outs[j] = argidx == j ? g : 0 for j < k. */
int znn_maxout_backward_s(const float *g, const uint8_t *argidx, int k, int64_t total,
                          float *const *outs, int nthreads);
int znn_maxout_backward_d(const double *g, const uint8_t *argidx, int k, int64_t total,
                          double *const *outs, int nthreads);

/* dst += src;  dst *= alpha. */
int znn_add_into_s(float *dst, const float *src, int64_t total, int nthreads);
int znn_add_into_d(double *dst, const double *src, int64_t total, int nthreads);
int znn_scale_into_s(float *dst, int64_t total, double alpha, int nthreads);
int znn_scale_into_d(double *dst, int64_t total, double alpha, int nthreads);

#endif
