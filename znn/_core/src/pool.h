/* Max filtering (dense sliding max with dilation) and max pooling, forward and backward.
 *
 * Layout: a map set is C-contiguous (C, Z, Y, X); 3-vectors are (z, y, x).  2D maps are
 * passed as Z = 1.  Every function exists for float (_s) and double (_d).
 *
 * Arg-max: int64 flat index (z*Y + y)*X + x into the per-channel INPUT volume.
 *
 * Max filter (znn `max_filter` edge): output size O = in - (size-1)*d per axis; output voxel
 * o covers input positions o + j*d, j = 0..size-1 per axis.  Computed separably: a pass
 * along z, then y, then x.  Ties inside a pass go to the earliest position (strict >), so
 * among tied maxima the winner has the smallest x, then the smallest y, then the smallest z.
 * Windows of up to ZNN_POOL_NAIVE_MAX taps per axis are compared tap by tap; larger
 * windows use repeated pair passes (window doubling), O(log size) comparisons per voxel.
 *
 * Max pool (znn `max_pool` edge): non-overlapping windows starting at 0; every input
 * dimension must be a multiple of size; output = in / size.  Tie rule identical to the max
 * filter with d = 1, i.e. max_pool(x) == max_filter(x)[::size] including the arg-max.
 *
 * Backward (both): dx[c, argmax[c, o]] += g[c, o]; dx is zeroed first unless `accumulate`.
 * Channels are distributed over threads; each channel is summed by one thread in output
 * order, so results never depend on the thread count.  An arg-max outside the input volume
 * gives ZNN_ERR_ARG and leaves dx partly updated.
 *
 * Ownership: all pointers belong to the caller; x/g are read only; outputs must not alias
 * inputs.  Scratch is allocated internally (two channel-sized buffers per worker thread).
 * Thread safety: re-entrant.  Status: ZNN_OK, ZNN_ERR_ARG (bad sizes / arg-max out of
 * range), ZNN_ERR_NOMEM.
 */
#ifndef ZNN_POOL_H
#define ZNN_POOL_H

#include <stdint.h>

#define ZNN_POOL_NAIVE_MAX 6
#define ZNN_POOL_RECOMPUTE_MAX 8  /* taps of the largest window the arg-max-free backward takes */

int znn_max_filter_forward_s(const float *x, int64_t C, const int64_t in_shape[3],
                             const int64_t size[3], const int64_t dilation[3],
                             float *y, int64_t *argmax, int nthreads);
int znn_max_filter_forward_d(const double *x, int64_t C, const int64_t in_shape[3],
                             const int64_t size[3], const int64_t dilation[3],
                             double *y, int64_t *argmax, int nthreads);

/* The max filter's values only (no arg-max; the same values): for forward-only passes. */
int znn_max_filter_values_s(const float *x, int64_t C, const int64_t in_shape[3],
                            const int64_t size[3], const int64_t dilation[3], float *y,
                            int nthreads);
int znn_max_filter_values_d(const double *x, int64_t C, const int64_t in_shape[3],
                            const int64_t size[3], const int64_t dilation[3], double *y,
                            int nthreads);

int znn_max_pool_forward_s(const float *x, int64_t C, const int64_t in_shape[3],
                           const int64_t size[3], float *y, int64_t *argmax, int nthreads);
int znn_max_pool_forward_d(const double *x, int64_t C, const int64_t in_shape[3],
                           const int64_t size[3], double *y, int64_t *argmax, int nthreads);

/* g, argmax: (C, out_vol); dx: (C, in_vol). */
int znn_max_backward_s(const float *g, const int64_t *argmax, int64_t C, int64_t out_vol,
                       int64_t in_vol, float *dx, int accumulate, int nthreads);
int znn_max_backward_d(const double *g, const int64_t *argmax, int64_t C, int64_t out_vol,
                       int64_t in_vol, double *dx, int accumulate, int nthreads);

/* Max filter backward without a stored arg-max: each output's window maximum is found again
 * in x (the forward input) and g goes to the first tap in the tie order above (smallest x,
 * then y, then z offset) holding it: the same dx as max_filter_backward with the arg-max of
 * max_filter_forward, up to the order of additions.  A window whose maximum is NaN passes no
 * gradient.  Windows of at most ZNN_POOL_RECOMPUTE_MAX taps (each tap is one pass over the
 * outputs; larger windows are cheaper with the arg-max).  Work items are channels (or channel
 * slabs when size z = 1); every dx element is summed in the same order whatever the thread
 * count.  Scratch: three runs of at most POOL_CHUNK values per thread. */
int znn_max_filter_backward_recompute_s(const float *x, const float *g, int64_t C,
                                        const int64_t in_shape[3], const int64_t size[3],
                                        const int64_t dilation[3], float *dx, int accumulate,
                                        int nthreads);
int znn_max_filter_backward_recompute_d(const double *x, const double *g, int64_t C,
                                        const int64_t in_shape[3], const int64_t size[3],
                                        const int64_t dilation[3], double *dx, int accumulate,
                                        int nthreads);

#endif
