/* Winograd convolution (direct_winograd.h): tile matrices, pass geometry, float/double
 * instantiation and the public entry points. */
#include "direct_winograd.h"

#include <limits.h>
#include <mkl.h>  /* batch GEMM (ZNN_USE_MKL_DIRECT_CONV) and mkl_set_num_threads_local */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define WINO_MAXA 8     /* array bound of the tile matrices */
#define WINO_TILES 256  /* most tiles per band (GEMM columns) */
/* Bytes of one band's transformed sources and products (one slice of each) that the band
 * height aims at: the three stages of an item (transform, GEMMs, inverse transform) then
 * pass data through the core's L2 and nearby L3 instead of memory.  Measured on an AVX2
 * host with 512 KiB of L2 per core (8 VD2D3D and N4 layers, all three passes, one core):
 * 0.75-1.5 MiB took 2.53 s against 3.13 s for 256-tile bands (2-4 MiB), and 2.84 s at
 * 3 MiB; layers of 48-100 maps gain most, those of 24-36 maps are unchanged. */
#define WINO_BAND_BYTES ((int64_t)3 << 19)
/* Items a weight gradient with z taps aims at (at least; more when it has more bands): its
 * output slices are split into runs, each source slice is transformed once per run (ring),
 * and the z taps of a run's first slices read span = (kz - 1) * dz slices before it again.
 * The weight gradient's sums follow its items, so their number is fixed; the forward and
 * backward-data passes, whose results do not depend on the items, aim at 2 per thread
 * (one core, 48->64 3x3x3 dilated by 4: 4 items took 0.85x the time of 8). */
#define WINO_ZITEMS 8
#define WINO_MIN_TILES 32  /* fewest tiles (GEMM columns) of a band thinned for more items */
#define WINO_RUN 4      /* x classes from which rows are split in runs of one per class */
#define WINO_PREFETCH_HINT 2  /* __builtin_prefetch locality: 2 = into L2 */
/* Weight-gradient partial sums: one per item, at most WINO_GROUPS, and no more than fit in
 * WINO_GROUP_BYTES (each is zeroed, accumulated into and added up on every call) unless
 * that is fewer than WINO_MIN_GROUPS, which keeps 8 threads busy.  A function of the shapes
 * only, so the gradient does not depend on the thread count. */
#define WINO_GROUPS 16
#define WINO_MIN_GROUPS 8
#define WINO_GROUP_BYTES ((int64_t)8 << 20)

/* Two adjacent float classes of a row dilated by 2, moved as one unit (rows start at any
 * float, hence the alignment of 4). */
typedef uint64_t __attribute__((may_alias, aligned(4))) wino_pair;

/* Inlined into each clone, so compiled for its instruction set. */
#define WINO_INLINE __attribute__((always_inline)) static inline


int znn_wino_tile(int64_t r, int points)
{
    if (r < 2 || r > 5 || (points != 6 && points != 8)) return 0;
    return points + 1 - (int)r;
}

/* Minimal filtering F(m, r) for correlation y_i = sum_k g_k x_{i+k} (i < m, k < r), with
 * a = m + r - 1 points p_0..p_{a-2} and infinity:  y = AT [(G g) (.) (BT x)].
 *   AT[i][j] = p_j^i,                 AT[i][a-1] = [i == m-1]
 *   G[j][k]  = p_j^k / prod_{l!=j}(p_j - p_l),   G[a-1][k] = [k == r-1]
 *   BT[j][n] = coefficient of t^n in prod_{l!=j}(t - p_l),  BT[a-1][n] in prod_l (t - p_l)
 * (the transpose of Toom-Cook linear convolution: evaluate at the points, multiply,
 * interpolate with Lagrange polynomials). */
typedef struct {
    int m, r, a;
    double AT[WINO_MAXA][WINO_MAXA], G[WINO_MAXA][WINO_MAXA], BT[WINO_MAXA][WINO_MAXA];
} wmat;

static void poly_from_roots(const double *p, int n, int skip, double *coef)
{
    int deg = 0;
    coef[0] = 1;
    for (int l = 0; l < n; l++) {
        if (l == skip) continue;
        coef[deg + 1] = 0;
        for (int i = deg + 1; i > 0; i--) coef[i] = coef[i - 1] - p[l] * coef[i];
        coef[0] = -p[l] * coef[0];
        deg++;
    }
}

static void wmat_init(wmat *W, int m, int r)
{
    static const double pts[WINO_MAXA - 1] = {0, 1, -1, 2, -2, 0.5, -0.5};
    const int a = m + r - 1, n = a - 1;
    memset(W, 0, sizeof *W);
    W->m = m;
    W->r = r;
    W->a = a;
    for (int j = 0; j < n; j++) {
        double den = 1, pw = 1;
        for (int l = 0; l < n; l++)
            if (l != j) den *= pts[j] - pts[l];
        for (int i = 0; i < m; i++, pw *= pts[j]) W->AT[i][j] = pw;
        pw = 1;
        for (int k = 0; k < r; k++, pw *= pts[j]) W->G[j][k] = pw / den;
        poly_from_roots(pts, n, j, W->BT[j]);
    }
    W->AT[m - 1][a - 1] = 1;
    W->G[a - 1][r - 1] = 1;
    poly_from_roots(pts, n, -1, W->BT[a - 1]);
}

/* One correlation pass: dst[j, p] (+)= sum_i sum_t src[i, p - off + t*d] * Kc[j, i, t]
 * (zero outside src), tiled in y and x. */
typedef struct {
    int64_t ns, nd;              /* source / destination maps */
    int64_t src[3], dst[3];      /* spatial shapes */
    int64_t k[3], d[3], off[3];  /* kernel (correlation order), dilation, source offset */
    wmat W[2];                   /* y and x tile matrices */
    int64_t nt[2];               /* tiles per axis */
    int64_t *t0[2], *tn[2];      /* per tile: first output position, outputs inside dst */
    int64_t cx;                  /* x residue classes: tile column t = k * cx + r */
    int64_t rows, nbands;        /* tile rows per band, bands */
    int64_t zc, nzc, nitems;     /* output slices per item, items per band, items */
    int64_t ring;                /* transformed source slices held: (kz - 1) * dz + 1 */
} wgeom;

static void wgeom_free(wgeom *G)
{
    for (int a = 0; a < 2; a++) {
        free(G->t0[a]);
        free(G->tn[a]);
        G->t0[a] = G->tn[a] = NULL;
    }

}

/* Tiles of an axis of n outputs with dilation d and m outputs per tile, class by class. */
static int64_t axis_tiles(int64_t n, int64_t d, int64_t m, int64_t *t0, int64_t *tn)
{
    int64_t c = 0;
    for (int64_t r = 0; r < min64(d, n); r++) {
        const int64_t nr = (n - r + d - 1) / d;
        for (int64_t s = 0; s < nr; s += m, c++) {
            if (t0) { t0[c] = r + s * d; tn[c] = min64(m, nr - s); }
        }
    }
    return c;
}

/* Tile columns of x: t = k * cx + r (cx = min(d, n) classes, k-th tile of each class, the
 * same count K for all), so that the columns of consecutive classes are adjacent in memory;
 * a tile may hold fewer than m outputs, or none (past the end, reading zeros). */
static int64_t axis_tiles_x(int64_t n, int64_t d, int64_t m, int64_t *t0, int64_t *tn)
{
    const int64_t cx = min64(d, n), K0 = ((n + d - 1) / d + m - 1) / m;
    /* Rows of a multiple of 8 tiles keep the transforms' loops free of scalar remainders:
     * empty tiles are added when that costs at most an eighth more. */
    int64_t K = K0;
    while ((K * cx) % 8 && (K + 1 - K0) * 8 <= K0) K++;
    if ((K * cx) % 8) K = K0;
    for (int64_t k = 0; t0 && k < K; k++)
        for (int64_t r = 0; r < cx; r++) {
            const int64_t at = r + d * m * k;
            t0[k * cx + r] = at;
            tn[k * cx + r] = at < n ? min64(m, (n - at + d - 1) / d) : 0;
        }
    return K * cx;
}

static int wgeom_init(wgeom *G, int64_t ns, int64_t nd, const int64_t *src, const int64_t *dst,
                      const int64_t *k, const int64_t *d, const int64_t *off, int points,
                      size_t rsize, int64_t zitems)
{
    memset(G, 0, sizeof *G);
    G->ns = ns;
    G->nd = nd;
    for (int a = 0; a < 3; a++) {
        G->src[a] = src[a];
        G->dst[a] = dst[a];
        G->k[a] = k[a];
        G->d[a] = d[a];
        G->off[a] = off[a];
    }
    for (int a = 0; a < 2; a++) {
        const int m = znn_wino_tile(k[a + 1], points);
        if (!m)
            return znn_fail(ZNN_ERR_ARG, "winograd conv: kernel %lldx%lldx%lld with %d points: y "
                            "and x lengths must be 2..5 and points 6 or 8", (long long)k[0],
                            (long long)k[1], (long long)k[2], points);
        wmat_init(&G->W[a], m, (int)k[a + 1]);
        const int64_t n = a ? axis_tiles_x(dst[2], d[2], m, NULL, NULL)
                            : axis_tiles(dst[1], d[1], m, NULL, NULL);
        G->nt[a] = n;
        G->t0[a] = malloc((size_t)n * sizeof(int64_t));
        G->tn[a] = malloc((size_t)n * sizeof(int64_t));
        if (!G->t0[a] || !G->tn[a]) {
            wgeom_free(G);
            return znn_fail(ZNN_ERR_NOMEM, "winograd conv: out of memory");
        }
        if (a)
            axis_tiles_x(dst[2], d[2], m, G->t0[1], G->tn[1]);
        else
            axis_tiles(dst[1], d[1], m, G->t0[0], G->tn[0]);
    }
    const int64_t ntx = G->nt[1], a2 = (int64_t)G->W[0].a * G->W[1].a;
    G->cx = min64(d[2], dst[2]);
    const int64_t row_bytes = a2 * (max64(ns, 1) + max64(nd, 1)) * ntx * (int64_t)rsize;
    G->rows = min64(G->nt[0], min64((WINO_TILES + ntx - 1) / ntx,
                                    max64(1, WINO_BAND_BYTES / row_bytes)));
    const char *env = getenv("ZNN_WINO_BAND");
    const int fixed = env && atol(env) > 0;
    if (fixed) G->rows = min64(G->nt[0], atol(env));
    G->nbands = (G->nt[0] + G->rows - 1) / G->rows;
    /* With z taps, items short of `zitems` come first from thinner bands, which transform
     * nothing twice, as long as a band keeps WINO_MIN_TILES tiles, and only then from z
     * runs (net3d_5's 24->24 5x5x5 layer dilated by 2 over 26^3 outputs: one band of 8 tile
     * rows and runs of at least 8 slices made 3 items for 2 threads) */
    if (k[0] > 1 && !fixed && G->nbands < zitems) {
        const int64_t rmin = min64(G->nt[0], (WINO_MIN_TILES + ntx - 1) / ntx);
        const int64_t want = min64(zitems, G->nt[0] / rmin);
        if (want > G->nbands) {
            G->rows = (G->nt[0] + want - 1) / want;
            G->nbands = (G->nt[0] + G->rows - 1) / G->rows;
        }
    }
    /* Output slices per item: one each without z taps; else runs as long as `zitems` items
     * allow, as every run transforms its first span source slices again, and at least span
     * slices long (at most twice the transforms; one core, weight gradient of 64->64 3x3x3
     * dilated by 4 over 16 slices: 2 runs took 0.63x the time of 8). */
    G->ring = (k[0] - 1) * d[0] + 1;
    if (k[0] == 1) {
        G->zc = 1;
    } else {
        const int64_t span = G->ring - 1;
        const int64_t runs = min64(max64(1, dst[0] / span),
                                   min64(dst[0], (zitems + G->nbands - 1) / G->nbands));
        G->zc = (dst[0] + runs - 1) / runs;
    }
    G->nzc = (dst[0] + G->zc - 1) / G->zc;
    G->nitems = G->nbands * G->nzc;
    if (ns > INT_MAX / 64 || nd > INT_MAX / 64 || G->rows * ntx * max64(ns, nd) > INT_MAX) {
        wgeom_free(G);
        return znn_fail(ZNN_ERR_ARG, "winograd conv: too many maps for 32-bit BLAS indices");
    }
    return ZNN_OK;
}

/* Transformed kernel elements (or their gradient's) of a pass: kz * a2 * nd * ns. */
static int64_t kernel_elems(const wgeom *G)
{
    return G->k[0] * G->W[0].a * G->W[1].a * G->nd * G->ns;
}

/* The weight gradient's partial sums (see WINO_GROUPS). */
static int64_t wgrad_groups(const wgeom *G, size_t elem)
{
    const int64_t fit = WINO_GROUP_BYTES / max64(1, kernel_elems(G) * (int64_t)elem);
    return min64(G->nitems, min64(WINO_GROUPS, max64(WINO_MIN_GROUPS, fit)));
}

/* Element counts of one thread's item scratch (transformed sources V, transformed outputs M,
 * and the transforms' row buffers tmp, ph, o2, rowbuf), as scratch_alloc allocates them. */
static void scratch_sizes(const wgeom *G, int64_t n[6])
{
    const int64_t a2 = (int64_t)G->W[0].a * G->W[1].a, ntx = G->nt[1], N = G->rows * ntx;
    n[0] = G->ring * a2 * G->ns * N;
    n[1] = a2 * G->nd * N;
    n[2] = a2 * ntx;
    n[3] = WINO_MAXA * (ntx + WINO_MAXA * G->cx);
    n[4] = WINO_MAXA * ntx;
    n[5] = G->rows * WINO_MAXA * WINO_MAXA * ntx;
}

#define REAL float
#define SFX(name) name##_s
#define GEMM_BATCH cblas_sgemm_batch_strided
#include "direct_winograd.inc"
#undef REAL
#undef SFX
#undef GEMM_BATCH

#define REAL double
#define SFX(name) name##_d
#define GEMM_BATCH cblas_dgemm_batch_strided
#include "direct_winograd.inc"
#undef REAL
#undef SFX
#undef GEMM_BATCH

/* The tile geometry of pass `pass` (0 forward, 1 backward data, 2 weight gradient) with nt
 * threads from the forward shapes (in_shape, k, d): the forward and the weight gradient tile
 * the output, backward data tiles the input gradient. */
static int pass_geom(wgeom *G, int64_t n_in, int64_t n_out, const int64_t *in,
                     const int64_t *k, const int64_t *d, int points, int pass, size_t elem,
                     int nt)
{
    const int64_t zitems = pass == 2 ? WINO_ZITEMS : 2 * (int64_t)nt;
    int64_t out[3], zero[3] = {0, 0, 0}, off[3];
    for (int a = 0; a < 3; a++) {
        if (k[a] < 1 || d[a] < 1 || in[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "winograd conv: axis %d: in=%lld k=%lld d=%lld must "
                            "be >= 1", a, (long long)in[a], (long long)k[a], (long long)d[a]);
        out[a] = in[a] - (k[a] - 1) * d[a];
        if (out[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "winograd conv: axis %d: dilated kernel larger than "
                            "the input", a);
        off[a] = (k[a] - 1) * d[a];
    }
    if (pass == 1)
        return wgeom_init(G, n_out, n_in, out, in, k, d, off, points, elem, zitems);
    return wgeom_init(G, n_in, n_out, in, out, k, d, zero, points, elem, zitems);
}

#define ZNN_WINO_ENTRY(pub, impl, T, A, B, OUT, PASS)                                        \
    int pub(const T *A, const T *B, T *OUT, int64_t n_in, int64_t n_out,                       \
            const int64_t *in_shape, const int64_t *k, const int64_t *d, int points,          \
            int accumulate, int nthreads)                                                      \
    {                                                                                          \
        wgeom G;                                                                               \
        const int nt = znn_threads(nthreads);                                                  \
        int st = pass_geom(&G, n_in, n_out, in_shape, k, d, points, PASS, sizeof(T), nt);     \
        if (st != ZNN_OK) return st;                                                           \
        st = impl(A, B, OUT, &G, accumulate, nt);                                              \
        wgeom_free(&G);                                                                        \
        return st;                                                                             \
    }

ZNN_WINO_ENTRY(znn_wino_forward_s, forward_s, float, x, w, y, 0)
ZNN_WINO_ENTRY(znn_wino_forward_d, forward_d, double, x, w, y, 0)
ZNN_WINO_ENTRY(znn_wino_backward_data_s, backward_data_s, float, g, w, dx, 1)
ZNN_WINO_ENTRY(znn_wino_backward_data_d, backward_data_d, double, g, w, dx, 1)
ZNN_WINO_ENTRY(znn_wino_backward_weight_s, backward_weight_s, float, x, g, dw, 2)
ZNN_WINO_ENTRY(znn_wino_backward_weight_d, backward_weight_d, double, x, g, dw, 2)

int znn_wino_scratch_bytes(int64_t n_in, int64_t n_out, const int64_t *in_shape,
                           const int64_t *k, const int64_t *d, int points, int pass,
                           int64_t elem, int nthreads, int64_t *bytes)
{
    int64_t n[6];
    *bytes = 0;
    if (pass < 0 || pass > 2 || elem < 1)
        return znn_fail(ZNN_ERR_ARG, "winograd scratch: pass must be 0..2 and elem >= 1");
    wgeom G;
    const int st = pass_geom(&G, n_in, n_out, in_shape, k, d, points, pass, (size_t)elem,
                             znn_threads(nthreads));
    if (st != ZNN_OK) return st;
    if (G.ns > 0 && G.nd > 0) {
        const int64_t nu = kernel_elems(&G);  /* transformed kernels or their gradient */
        const int64_t ng = wgrad_groups(&G, (size_t)elem);
        const int64_t threads = min64(znn_threads(nthreads), pass == 2 ? ng : G.nitems);
        scratch_sizes(&G, n);
        const int64_t per = (n[0] + n[1] + n[2] + n[3] + n[4] + n[5]) * elem
                            + max64(G.src[1], G.dst[1]) * (int64_t)sizeof(int64_t);
        *bytes = threads * per + (pass == 2 ? ng : 1) * nu * elem;
    }
    wgeom_free(&G);
    return ZNN_OK;
}
