/* Winograd (Toom-Cook) dilated valid convolution for small kernels in y and x.
 *
 * Same arrays, shapes and math as direct.h (forward, backward-data, backward-weight of the
 * true convolution with the kernel flipped), computed with minimal filtering F(m, r) on tiles
 * of the (y, x) plane; the z taps are summed as in direct convolution.
 *
 * Tiles: on an axis with kernel length r (2 <= r <= 5) a tile reads a = `points` inputs (6:
 * interpolation points 0, 1, -1, 2, -2 and infinity; 8: also 1/2 and -1/2) and holds
 * m = a - r + 1 outputs, so a 2D tile costs a*a products per pair of maps instead of
 * m*m*r*r (6 points, r = 3: 36 instead of 144; 8 points, r = 5: 64 instead of 400).  More
 * points cost fewer products per output but more transform work per tile, more waste in the
 * partial tiles at the ends of short rows, and more rounding (float32, random data: relative
 * error ~1e-6 with 6 points, ~3e-6 with 8).
 *
 * With dilation d a tile's outputs and inputs are d apart, so every residue class of
 * positions is tiled on its own; in x the tiles of all classes are interleaved (tile
 * k * classes + r), so the transforms run over contiguous memory.  Tiles past the end of a
 * class read zeros and their extra outputs are dropped.  The transforms are
 *     forward  Y = A^T [ sum_i (G g_ij G^T) (.) (B^T x_i B) ] A
 * and the two backward passes run the transposed maps (backward-data as a forward pass of the
 * zero-padded gradient with the unflipped kernel, the weight gradient as
 * dU = sum over tiles (A dY A^T) (.) (B^T x B), dW = G^T dU G), so every pass is exact in
 * exact arithmetic; in floating point the error is a few times that of direct convolution.
 *
 * Work: bands of tile rows times a run of output slices, one item per thread at a time.  An
 * item goes through its output slices in order; each source slice (all input maps) is
 * transformed once, when the first output slice that reads it comes, into a ring of the
 * (kz - 1) * dz + 1 slices the z taps read; then one batched GEMM per z tap multiplies the
 * (n_dst x n_src) transformed kernels with the (n_src x tiles) transformed inputs (MKL,
 * single-threaded inside; plain C loops in builds without ZNN_USE_MKL_DIRECT_CONV).  The
 * weight gradient sums items into a fixed number of groups that are added in order, so
 * results do not depend on the thread count.
 *
 * Status: as direct.h; ZNN_ERR_ARG also when a kernel's y or x length is outside 2..5.
 * ZNN_WINO_BAND (tile rows per band, read on every call) overrides the band height; tests
 * use it to force many small items.
 */
#ifndef ZNN_DIRECT_WINOGRAD_H
#define ZNN_DIRECT_WINOGRAD_H

#include <stdint.h>

#include "common.h"

/* Outputs per tile for kernel length r with `points` (6 or 8) inputs per tile, or 0 when
 * there is no such tile (r < 2 or r > 5, or other points). */
int znn_wino_tile(int64_t r, int points);

int znn_wino_forward_s(const float *x, const float *w, float *y, int64_t n_in, int64_t n_out,
                       const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,
                       int accumulate, int nthreads);
int znn_wino_forward_d(const double *x, const double *w, double *y, int64_t n_in,
                       int64_t n_out, const int64_t *in_shape, const int64_t *k,
                       const int64_t *d, int points, int accumulate, int nthreads);

int znn_wino_backward_data_s(const float *g, const float *w, float *dx, int64_t n_in,
                             int64_t n_out, const int64_t *in_shape, const int64_t *k,
                             const int64_t *d, int points, int accumulate, int nthreads);
int znn_wino_backward_data_d(const double *g, const double *w, double *dx, int64_t n_in,
                             int64_t n_out, const int64_t *in_shape, const int64_t *k,
                             const int64_t *d, int points, int accumulate, int nthreads);

int znn_wino_backward_weight_s(const float *x, const float *g, float *dw, int64_t n_in,
                               int64_t n_out, const int64_t *in_shape, const int64_t *k,
                               const int64_t *d, int points, int accumulate, int nthreads);
int znn_wino_backward_weight_d(const double *x, const double *g, double *dw, int64_t n_in,
                               int64_t n_out, const int64_t *in_shape, const int64_t *k,
                               const int64_t *d, int points, int accumulate, int nthreads);

/* Peak bytes the kernels above allocate for one call (pass 0 forward, 1 backward data,
 * 2 weight gradient; elem = bytes per value): per-thread item scratch, and the transformed
 * kernels or the weight gradient's partial sums.  Written to *bytes. */
int znn_wino_scratch_bytes(int64_t n_in, int64_t n_out, const int64_t *in_shape,
                           const int64_t *k, const int64_t *d, int points, int pass,
                           int64_t elem, int nthreads, int64_t *bytes);

#endif
