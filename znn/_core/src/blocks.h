/* Block gather / scatter of the blocked (overlap-save) FFT convolution (znn/net/blocked.py).
 *
 * Maps are C-contiguous (C, Z, Y, X) of `es`-byte reals (4 or 8).  A block p has its first
 * position o_p = origins[3p .. 3p+2] in the maps and reads / writes positions o_p + d*a
 * (a per axis, d the step per axis).
 *
 * gather: out[c, p, a] = x[c, o_p + d*a] for a < L (per axis), 0 where o_p + d*a falls
 *   outside the maps; out is (C, P, L0, L1, L2).
 * scatter: y[c, o_p + d*a] = blk[c, p, a] for a < counts[3p .. 3p+2] (per axis); blk is
 *   (C, P, V0, V1, V2), counts <= V, and every written position must be inside y (checked).
 *
 * Work is split over (c, p) pairs on `nthreads` OpenMP threads (<= 0: every core).  All
 * pointers belong to the caller and must not overlap.  Returns ZNN_OK or ZNN_ERR_ARG.
 */
#ifndef ZNN_BLOCKS_H
#define ZNN_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

int znn_blocks_gather(const void *x, size_t es, int64_t C, const int64_t shape[3],
                      const int64_t *origins, int64_t P, const int64_t d[3],
                      const int64_t L[3], void *out, int nthreads);
int znn_blocks_scatter(const void *blk, size_t es, int64_t C, int64_t P, const int64_t V[3],
                       const int64_t *origins, const int64_t *counts, const int64_t d[3],
                       void *y, const int64_t shape[3], int nthreads);

#endif
