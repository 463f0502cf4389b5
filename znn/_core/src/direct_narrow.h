/* Register-blocked direct convolution for layers with few maps on one side (float).
 *
 * A "valid" correlation over tap offsets: for every output point p = (z, y, x),
 *     y[j, p] (+)= sum_i sum_t wr[(i*T + t)*n_dst + j] * src[i, z*sz + y*sy + x + off[t]]
 * with src maps vin elements apart and y compact (out[0] x out[1] x out[2], maps vout apart).
 * The GEMM lowering runs such layers at 10-45 GFLOP/s on one core (a product with 2..10 rows
 * or an inner dimension of 10); here a block of up to 6 output maps x 1-4 vectors of a row is
 * held in vector registers while every input map and tap is added, at 85-110 GFLOP/s.  Rows
 * need at least ZNN_NARROW_MIN_X points: a row is cut into blocks of NV vectors and its end
 * into blocks of one vector, the last of them shifted back to end with the row.  Work is split
 * into (row, map block) items; each output element is computed by one thread in a fixed
 * order, whatever the thread count.
 * Returns ZNN_OK or ZNN_ERR_ARG (rows too short). */
#ifndef ZNN_DIRECT_NARROW_H
#define ZNN_DIRECT_NARROW_H

#include <stdint.h>

#include "common.h"

#define ZNN_NARROW_MIN_X 16

int znn_narrow_conv_s(const float *src, int64_t n_src, int64_t vin, int64_t sz, int64_t sy,
                      const float *wr, int64_t n_dst, const int64_t *off, int64_t T,
                      float *y, const int64_t *out, int accumulate, int nthreads);

/* Floats per vector of the instances these calls run (16 AVX-512, 8 AVX2, 4 otherwise). */
int znn_narrow_width(void);

/* The weight gradient of the same correlation (forward direction, wr's layout (n_in, n_out,
 * T) as dw): dw[i, j, t] (+)= sum_p g[j, p] * src[i, q(p) + off[t]], g compact like y above.
 * One work item per input map, block of up to 3 output maps and block of 2-8 taps (by the
 * vector width) sums over every output point, so each weight is summed by one thread in a
 * fixed order. */
int znn_narrow_weight_s(const float *src, int64_t n_in, int64_t vin, int64_t sz, int64_t sy,
                        const float *g, int64_t n_out, const int64_t *off, int64_t T,
                        float *dw, const int64_t *out, int accumulate, int nthreads);

#endif
