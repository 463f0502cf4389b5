/* MALIS weights (Turaga et al. 2009, ZNN's "zalis") and the rand error of an affinity graph.
 *
 * Graph.  An affinity volume is (3, Z, Y, X), C-contiguous; channel 0 is the x-affinity (last
 * axis), 1 the y-affinity, 2 the z-affinity.  The value stored at voxel v = (z, y, x) in channel
 * c is the edge between v and its predecessor along that axis (x-1, y-1 or z-1); voxels with no
 * predecessor along an axis have no edge there (their value is ignored), so Z == 1 gives a 2D
 * graph without z-edges.  Edge index e = c*V + v (V = Z*Y*X) is also the output position.
 *
 * Edge order (Kruskal, maximum spanning forest).  a = min(aff, high) (NaN stays NaN); an edge
 * takes part only when a > low (so NaN edges never do).  Edges are visited by a descending;
 * ties are broken as in the original (std::sort with std::greater on (a, v1, v2)): the edge
 * whose predecessor voxel v1 has the larger raster index first, and for the same v1 the
 * z-edge before the y-edge before the x-edge.  -0.0 and +0.0 are equal.
 *
 * Counting.  When an edge joins two sets A and B, it is the maximin edge of every labelled pair
 * (u in A, w in B, both with segment id > 0): it receives
 *     splitter[e] = sum_k cA(k) cB(k)            (same-segment pairs)
 *     merger[e]   = sum_{k != k'} cA(k) cB(k')   (different-segment pairs)
 * with cX(k) the number of voxels of segment k in X, divided by the size of segment k when
 * frac_norm is set.  Same-segment pairs count as FN when a < 0.5 else TP; different-segment
 * pairs as FP when a > 0.5 else TN.  Voxels with id 0 join sets but are never counted.
 * Counts are exact integers (held in double, exact below 2^53) without frac_norm.
 *
 * Memory is linear in V: union-find arrays, one count-map entry per labelled voxel in a shared
 * open-addressing table keyed by (set, segment id); a merge moves the map with fewer distinct
 * ids into the other one (small-into-large), so a voxel's entry moves O(log V) times.
 *
 * Threading: single-threaded, reentrant, no global state; the caller may release the GIL.
 * Status: ZNN_OK; ZNN_ERR_ARG for bad shapes / ids (3 * V must be below 2^30);
 * ZNN_ERR_NOMEM when scratch allocation fails.
 */
#ifndef ZNN_MALIS_H
#define ZNN_MALIS_H

#include <stdint.h>

typedef struct {
    int64_t n;          /* voxels with segment id > 0 */
    double tp, tn, fp, fn;
    double rand_error;  /* (fp + fn) / (n (n - 1) / 2); 0 when n <= 1 */
} znn_malis_stats;

/* True segmentation from true affinities (3, Z, Y, X): connected components of the edges with
 * true affinity > 0.5; components of one voxel get id 0; the others are numbered 1, 2, ... in
 * raster order of their first voxel.  seg: (Z, Y, X) int64, written by the kernel; *nseg gets
 * the largest id and *n_labelled the number of voxels with id > 0 (either may be NULL). */
int znn_malis_segment_s(const float *true_affs, const int64_t shape[3], int64_t *seg,
                        int64_t *nseg, int64_t *n_labelled);
int znn_malis_segment_d(const double *true_affs, const int64_t shape[3], int64_t *seg,
                        int64_t *nseg, int64_t *n_labelled);

/* MALIS weights of affs (3, Z, Y, X) against the segmentation seg (Z, Y, X) with ids in
 * [0, nseg].  merger / splitter: (3, Z, Y, X) float64, overwritten (zero where an edge decides
 * no labelled pair); both may be NULL to get only the statistics.  stats must not be NULL. */
int znn_malis_weights_s(const float *affs, const int64_t *seg, int64_t nseg,
                        const int64_t shape[3], double high, double low, int frac_norm,
                        double *merger, double *splitter, znn_malis_stats *stats);
int znn_malis_weights_d(const double *affs, const int64_t *seg, int64_t nseg,
                        const int64_t shape[3], double high, double low, int frac_norm,
                        double *merger, double *splitter, znn_malis_stats *stats);

#endif
