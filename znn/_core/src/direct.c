/* Direct dilated convolution: shape checks, shared geometry, float/double instantiation. */
#include "direct.h"
#include "direct_narrow.h"

#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if ZNN_USE_MKL_DIRECT_CONV
#include <mkl.h>
#endif

/* Geometry of one convolution.  The "wide" flat index of a point (z, y, x) is its index in
 * the input grid, q = z*sz + y*sy + x; an output point p and a tap t meet at input index
 * q(p) + off[t]. */
typedef struct {
    int64_t n_in, n_out;
    int64_t in[3], k[3], d[3], out[3];
    int64_t taps;        /* kz*ky*kx */
    int64_t vin, vout;   /* voxels per input / output map */
    int64_t sy, sz;      /* input strides in elements: X and Y*X */
    int64_t *off;        /* [taps] flat input offset of tap t: o(t) = (k-1-w)*d */
} geom;

static int geom_init(geom *G, int64_t n_in, int64_t n_out, const int64_t *in_shape,
                     const int64_t *k, const int64_t *d)
{
    memset(G, 0, sizeof *G);
    if (n_in < 0 || n_out < 0)
        return znn_fail(ZNN_ERR_ARG, "direct conv: negative map count (n_in=%lld, n_out=%lld)",
                        (long long)n_in, (long long)n_out);
    G->n_in = n_in;
    G->n_out = n_out;
    for (int a = 0; a < 3; a++) {
        if (k[a] < 1 || d[a] < 1 || in_shape[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "direct conv: axis %d: in=%lld k=%lld d=%lld must be >= 1",
                            a, (long long)in_shape[a], (long long)k[a], (long long)d[a]);
        G->in[a] = in_shape[a];
        G->k[a] = k[a];
        G->d[a] = d[a];
        G->out[a] = in_shape[a] - (k[a] - 1) * d[a];
        if (G->out[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "direct conv: axis %d: dilated kernel %lld larger than input %lld",
                            a, (long long)((k[a] - 1) * d[a] + 1), (long long)in_shape[a]);
    }
    G->taps = k[0] * k[1] * k[2];
    G->vin = znn_vol3(G->in);
    G->vout = znn_vol3(G->out);
    G->sy = G->in[2];
    G->sz = G->in[1] * G->in[2];
#if ZNN_USE_MKL_DIRECT_CONV
    if (G->vin > INT_MAX || G->n_in * G->n_out * G->taps > INT_MAX || G->n_in > INT_MAX / 2
        || G->n_out > INT_MAX / 2)
        return znn_fail(ZNN_ERR_ARG, "direct conv: volume or kernel too large for 32-bit BLAS indices");
#endif
    G->off = malloc((size_t)G->taps * sizeof *G->off);
    if (!G->off) return znn_fail(ZNN_ERR_NOMEM, "direct conv: out of memory");
    int64_t t = 0;
    for (int64_t a = 0; a < k[0]; a++)
        for (int64_t b = 0; b < k[1]; b++)
            for (int64_t c = 0; c < k[2]; c++, t++)
                G->off[t] = (k[0] - 1 - a) * d[0] * G->sz + (k[1] - 1 - b) * d[1] * G->sy
                            + (k[2] - 1 - c) * d[2];
    return ZNN_OK;
}

static void geom_free(geom *G) { free(G->off); G->off = NULL; }

/* A form forced by an environment variable (read per call; tests use them): 1 when it reads
 * `on`, 0 when `off`, -1 when unset or anything else. */
static int env_choice(const char *name, const char *on, const char *off)
{
    const char *env = getenv(name);
    if (env && !strcmp(env, on)) return 1;
    if (env && !strcmp(env, off)) return 0;
    return -1;
}


#if ZNN_USE_MKL_DIRECT_CONV
/* Output columns of the GEMM lowering, as runs of flat input-grid positions.  Output slice z
 * covers [z*sz, z*sz + span) with span = (Y'-1)*X + X'; when the maps are taller than the
 * output (Y > Y') the rows between two slices' runs hold no output, so each slice is its own
 * run instead of one run over them all (deep dilated layers: conv4 of VD2D3D, 3x3 dilated 8
 * on 116x116, had 35% of its columns in those rows).  Runs are cut into chunks of N. */
typedef struct {
    int64_t runs, span, stride;  /* run r = [r*stride, r*stride + span) */
} col_runs;

static col_runs col_runs_of(const geom *G)
{
    const int64_t span = (G->out[1] - 1) * G->sy + G->out[2];
    col_runs R = {1, (G->out[0] - 1) * G->sz + span, 0};
    if (G->out[0] > 1 && span < G->sz) R = (col_runs){G->out[0], span, G->sz};
    return R;
}

static inline int64_t col_chunks(const col_runs *R, int64_t N)
{
    return R->runs * ((R->span + N - 1) / N);
}

/* Chunk c (0 <= c < col_chunks): its first column and length. */
static inline void col_chunk(const col_runs *R, int64_t N, int64_t c, int64_t *q0, int64_t *n)
{
    const int64_t per = (R->span + N - 1) / N, r = c / per, k = c - r * per;
    *q0 = r * R->stride + k * N;
    *n = min64(N, R->span - k * N);
}

/* Backward data as a scatter of compact products (direct_scatter.inc) instead of a gather
 * over the input grid: ZNN_DIRECT_BACKWARD_DATA=gather|scatter (read per call; tests use it)
 * or, by default, when the input grid has at least 1.15 + 4/n_out times the output's points.
 * The gather multiplies vin columns, the scatter vout and then adds T*n_in values per output
 * point, which costs more against the GEMM the fewer output maps there are.  Measured on one
 * core (gather / scatter time): 48 -> 200 3x3 dilated 16 on 32^2, 64^2, 100^2, 200^2 outputs
 * (input/output 4.0, 2.25, 1.74, 1.35) 3.2, 2.3, 1.55, 1.12x; 48 -> 48 4x4 dilated 8 or 4
 * 2.1x at 3.06 down to 1.10x at 1.25 and 0.90x at 1.12; 48 -> 48 5x5 0.97x at 1.27;
 * 10 -> 10 7x7 0.71x at 1.41; 48 -> 48 7x7x7 on 8x8x8 2.6x at 5.4.  Since the scatter adds
 * a product row over its output rows in turn (it was 1.3 + 8/n_out before that): 48 -> 48
 * 4x4 1.28x at 1.37, 1.06-1.08x at 1.21-1.25, 0.88x at 1.09; 48 -> 200 1.12x at 1.35;
 * 24 -> 24 1.05x at 1.30, 0.89x at 1.21; 32 -> 32 3x3x3 0.91x at 1.12; 10 -> 10 7x7 0.93x at
 * 1.32, 0.83-0.87x at 1.12-1.21.  The choice depends on the shapes only, never on the
 * thread count.  The input maps are cut into SCATTER_GROUPS
 * groups (fewer when there are fewer maps). */
#define SCATTER_GROUPS 8

static int use_scatter(const geom *G)
{
    const int forced = env_choice("ZNN_DIRECT_BACKWARD_DATA", "scatter", "gather");
    if (forced >= 0) return forced;
    return (double)G->vin >= (1.15 + 4.0 / (double)G->n_out) * (double)G->vout;
}

/* Forward and weight gradient over compact output columns (direct_compact.inc) instead of
 * the wide runs of the input grid: ZNN_DIRECT_COMPACT=1|0 (read per call; tests use it) or,
 * by default, when the wide columns are at least COMPACT_RATIO times the output points.
 * Measured on one core of host A (wide time / compact time, forward and weight gradient, at
 * that ratio): 48 -> 48 7x7x7 dilated 4 on 8^3 (3.6) 2.98, 3.10x; 24 -> 24 5x5x5 dilated 4
 * on 8^3 (2.75) 1.79, 2.63x; 48 -> 200 3x3 dilated 16 on 32^2, 64^2, 100^2 (1.97, 1.49,
 * 1.32) 1.74-1.25x, 1.96-1.29x; 48 -> 48 7x7x7 dilated 2 on 34^3 (1.34) 1.09, 1.19x;
 * 64 -> 64 3x3x3 dilated 4 on 16x32x32 (1.24) 1.10, 1.18x; 48 -> 48 4x4 dilated 8 on 140^2
 * (1.17) 1.03, 1.13x; but 48 -> 48 5x5 dilated 2 on 282^2 (1.03) 0.91, 0.89x and 24 -> 24
 * 2x3x3 on 4x100x100 (1.02) 0.90, 0.96x.  A forward pass whose wide form copies a panel
 * anyway (few input maps) gains from a lower ratio, COMPACT_PANEL_RATIO: 1 -> 48 7x7x7 on
 * 47^3 (1.12) 1.43x, 1 -> 48 3x3x3 on 40^3 (1.05) 1.40x, 2 -> 32 5x5x5 on 30^3 (1.13) 1.12x,
 * 8 -> 32 3x3x3 on 40^3 (1.05) 1.05x, 4 -> 24 3x3x3 on 30^3 (1.06) 0.98x; the weight
 * gradient does not (1 -> 48 3x3x3 0.75x, 16 -> 16 3x3x3 on 30^3 (1.06) 0.83x). */
#define COMPACT_RATIO 1.15
#define COMPACT_PANEL_RATIO 1.05

static int use_compact(const geom *G, double ratio)
{
    const int forced = env_choice("ZNN_DIRECT_COMPACT", "1", "0");
    if (forced >= 0) return forced;
    const col_runs R = col_runs_of(G);
    return (double)(R.runs * R.span) >= ratio * (double)G->vout;
}
#endif

/* Scratch budget for all threads together. */
#define ZNN_DIRECT_BUDGET ((int64_t)64 << 20)

#define REAL float
#define SFX(name) name##_s
#define GEMM cblas_sgemm
#define GEMM_PACK_SIZE cblas_sgemm_pack_get_size
#define GEMM_PACK cblas_sgemm_pack
#define GEMM_COMPUTE cblas_sgemm_compute
#if ZNN_USE_MKL_DIRECT_CONV
#include "direct_gemm.inc"
#else
#include "direct_loops.inc"
#endif
#undef REAL
#undef SFX
#undef GEMM
#undef GEMM_PACK_SIZE
#undef GEMM_PACK
#undef GEMM_COMPUTE

#define REAL double
#define SFX(name) name##_d
#define GEMM cblas_dgemm
#define GEMM_PACK_SIZE cblas_dgemm_pack_get_size
#define GEMM_PACK cblas_dgemm_pack
#define GEMM_COMPUTE cblas_dgemm_compute
#if ZNN_USE_MKL_DIRECT_CONV
#include "direct_gemm.inc"
#else
#include "direct_loops.inc"
#endif
#undef REAL
#undef SFX
#undef GEMM
#undef GEMM_PACK_SIZE
#undef GEMM_PACK
#undef GEMM_COMPUTE

int znn_direct_uses_mkl(void) { return ZNN_USE_MKL_DIRECT_CONV ? 1 : 0; }

#if ZNN_USE_MKL_DIRECT_CONV
/* Layers with few maps: float forward and backward data run on the register-blocked kernel
 * (direct_narrow.h) instead of the GEMM lowering when the product it would replace has at
 * most 4 rows (output maps) or an inner dimension of at most 2 input maps, or the maps are
 * few on both sides: at most 32 each, or 16 on one side and 48 on the other, with the
 * AVX-512 instance; at most 12 each with the narrower ones (AVX2 has half the registers).
 * The kernel must have more than one tap, the sum per output point at least 8 terms
 * (n_src*T: shorter ones spend more on storing the registers than on adding) and rows at
 * least 64 points.  Measured on one core of host A, GEMM time / this kernel's (forward,
 * backward data): AVX-512: 10 -> 10 7x7 on 200^2 1.59-1.67, 1.50-1.64x (also on 512^2);
 * 10 -> 2 7x7 2.6-3.0, 2.2-2.4x; 16 -> 16 3x3 1.53, 1.21x; 24 -> 24 3x3 1.39-1.41,
 * 1.17-1.19x; 32 -> 32 3x3 1.34, 1.12x; 12 -> 48 and 48 -> 12 3x3 1.55-1.61, 1.22-1.34x;
 * 16 -> 16 3x3x3 1.34, 1.09x; but 48 -> 48 3x3 1.01, 1.02x.  AVX2 instance forced:
 * 10 -> 10 7x7 1.51-1.59, 1.50-1.53x; 24 -> 24 3x3 1.26, 1.11x; 16 -> 16 3x3x3 1.10, 0.80x;
 * 36 -> 36 3x3 0.93, 0.85x.  1x1 kernels stay on GEMM (48 -> 2: AVX2 0.75, 0.64x).
 * ZNN_DIRECT_NARROW=0|1 (read per call; tests use it) overrides the choice. */
static int use_narrow(int64_t n_src, int64_t n_dst, int64_t T, int64_t row)
{
    if (row < ZNN_NARROW_MIN_X || n_src == 0 || n_dst == 0) return 0;
    const int forced = env_choice("ZNN_DIRECT_NARROW", "1", "0");
    if (forced >= 0) return forced;
    if (row < 64 || T < 2 || n_src * T < 8) return 0;
    if (n_dst <= 4 || n_src <= 2) return 1;
    const int64_t lo = min64(n_src, n_dst), hi = max64(n_src, n_dst);
    if (znn_narrow_width() >= 16) return hi <= 32 || (lo <= 16 && hi <= 48);
    return hi <= 12;
}

/* The weights map-major (repack_maps in direct_gemm.inc), in a new buffer (NULL: no memory). */
static float *narrow_weights(const float *w, const geom *G, int by_out, int nt)
{
    float *wr = znn_malloc((size_t)(G->n_in * G->n_out * G->taps) * sizeof(float));
    if (wr) repack_maps_s(w, wr, G, by_out, nt);
    return wr;
}

static int narrow_forward_s(const float *x, const float *w, float *y, const geom *G,
                            int accumulate, int nt)
{
    float *wr = narrow_weights(w, G, 0, nt);
    if (!wr) return znn_fail(ZNN_ERR_NOMEM, "direct forward: out of memory for weights");
    int st = znn_narrow_conv_s(x, G->n_in, G->vin, G->sz, G->sy, wr, G->n_out, G->off,
                               G->taps, y, G->out, accumulate, nt);
    znn_free(wr);
    return st;
}

/* Backward data as the forward correlation of g, zero-padded by (k-1)*d on both sides of
 * every axis, with the unflipped taps: dx[i, q] = sum_j sum_t w[i,j,t] gp[j, q + w_t*d]. */
static int narrow_backward_data_s(const float *g, const float *w, float *dx, const geom *G,
                                  int accumulate, int nt)
{
    const int64_t no = G->n_out, T = G->taps;
    int64_t pad[3], P[3];
    for (int a = 0; a < 3; a++) {
        pad[a] = (G->k[a] - 1) * G->d[a];
        P[a] = G->out[a] + 2 * pad[a];
    }
    const int64_t vp = P[0] * P[1] * P[2], syp = P[2], szp = P[1] * P[2];
    float *gp = znn_malloc((size_t)(no * vp) * sizeof(float));
    float *wr = narrow_weights(w, G, 1, nt);
    int64_t *off = znn_malloc((size_t)T * sizeof(int64_t));
    int st = ZNN_OK;
    if (!gp || !wr || !off) {
        st = znn_fail(ZNN_ERR_NOMEM, "direct backward_data: out of memory for the padded gradient");
    } else {
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t j = 0; j < no; j++) {
            float *d = gp + j * vp;
            memset(d, 0, (size_t)vp * sizeof(float));
            for (int64_t z = 0; z < G->out[0]; z++)
                for (int64_t yy = 0; yy < G->out[1]; yy++)
                    memcpy(d + (z + pad[0]) * szp + (yy + pad[1]) * syp + pad[2],
                           g + j * G->vout + (z * G->out[1] + yy) * G->out[2],
                           (size_t)G->out[2] * sizeof(float));
        }
        int64_t t = 0;
        for (int64_t a = 0; a < G->k[0]; a++)
            for (int64_t b = 0; b < G->k[1]; b++)
                for (int64_t c = 0; c < G->k[2]; c++, t++)
                    off[t] = a * G->d[0] * szp + b * G->d[1] * syp + c * G->d[2];
        st = znn_narrow_conv_s(gp, no, vp, szp, syp, wr, G->n_in, off, T, dx, G->in,
                               accumulate, nt);
    }
    znn_free(gp);
    znn_free(wr);
    znn_free(off);
    return st;
}

static int forward_any_s(const float *x, const float *w, float *y, const geom *G,
                         int accumulate, int nt)
{
    if (use_narrow(G->n_in, G->n_out, G->taps, G->out[2]))
        return narrow_forward_s(x, w, y, G, accumulate, nt);
    return forward_s(x, w, y, G, accumulate, nt);
}

static int backward_data_any_s(const float *g, const float *w, float *dx, const geom *G,
                               int accumulate, int nt)
{
    if (use_narrow(G->n_out, G->n_in, G->taps, G->in[2]))
        return narrow_backward_data_s(g, w, dx, G, accumulate, nt);
    return backward_data_s(g, w, dx, G, accumulate, nt);
}

/* The weight gradient's kernel sums over every output point per (input map, 3 output maps,
 * 2-8 taps) and runs at 33-55 GFLOP/s, so it replaces the GEMM only where that is weakest:
 * at most 4 output maps or at most 2 input maps (taps > 1, rows >= 64).  One core, GEMM time
 * / this kernel's, AVX-512 and AVX2 instances, two runs: 10 -> 2 7x7 on 200^2 2.9-3.0,
 * 2.4-2.6x; 48 -> 2 3x3 2.1-2.3, 1.9-2.1x; 1 -> 24 3x3 1.1-1.25, 1.5-1.7x; 1 -> 16 3x3x3
 * 1.4-1.8, 1.4-2.0x; 1 -> 48 4x4 0.83-1.09, 1.0-1.7x; 1 -> 10 7x7 0.95-1.10, 1.0-1.1x.
 * Left to GEMM: 10 -> 10 7x7 (0.83-0.88, 0.79-0.84x), 16 -> 16 3x3 (0.58-0.67, 0.57-0.62x),
 * 48 -> 12 3x3 (0.68-0.79, 0.96-1.20x). */
static int use_narrow_weight(const geom *G)
{
    if (G->out[2] < ZNN_NARROW_MIN_X) return 0;
    const int forced = env_choice("ZNN_DIRECT_NARROW", "1", "0");
    if (forced >= 0) return forced;
    return G->out[2] >= 64 && G->taps > 1 && (G->n_out <= 4 || G->n_in <= 2);
}

static int backward_weight_any_s(const float *x, const float *g, float *dw, const geom *G,
                                 int accumulate, int nt)
{
    if (G->n_in > 0 && G->n_out > 0 && use_narrow_weight(G))
        return znn_narrow_weight_s(x, G->n_in, G->vin, G->sz, G->sy, g, G->n_out, G->off,
                                   G->taps, dw, G->out, accumulate, nt);
    return backward_weight_s(x, g, dw, G, accumulate, nt);
}
#else
#define forward_any_s forward_s
#define backward_data_any_s backward_data_s
#define backward_weight_any_s backward_weight_s
#endif

/* Public entry points: set up the geometry, run the implementation, release. */
#define ZNN_DIRECT_ENTRY(pub, impl, T, A, B, OUT)                                            \
    int pub(const T *A, const T *B, T *OUT, int64_t n_in, int64_t n_out,                       \
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int accumulate,       \
            int nthreads)                                                                      \
    {                                                                                          \
        geom G;                                                                                \
        int st = geom_init(&G, n_in, n_out, in_shape, k, d);                                   \
        if (st == ZNN_OK) st = impl(A, B, OUT, &G, accumulate, znn_threads(nthreads));        \
        geom_free(&G);                                                                         \
        return st;                                                                             \
    }

ZNN_DIRECT_ENTRY(znn_direct_forward_s, forward_any_s, float, x, w, y)
ZNN_DIRECT_ENTRY(znn_direct_forward_d, forward_d, double, x, w, y)
ZNN_DIRECT_ENTRY(znn_direct_backward_data_s, backward_data_any_s, float, g, w, dx)
ZNN_DIRECT_ENTRY(znn_direct_backward_data_d, backward_data_d, double, g, w, dx)
ZNN_DIRECT_ENTRY(znn_direct_backward_weight_s, backward_weight_any_s, float, x, g, dw)
ZNN_DIRECT_ENTRY(znn_direct_backward_weight_d, backward_weight_d, double, x, g, dw)
