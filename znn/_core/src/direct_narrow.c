/* Register-blocked direct convolution for layers with few maps (see direct_narrow.h). */
#include "direct_narrow.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Vectors per block row for JB maps, sized to the register file: about 12-16 accumulators
 * of 16 floats with AVX-512 (a C prototype on one AVX-512 core, 10 -> 10 7x7 on 200x200:
 * JB=5 with 2, 3 vectors 71, 86 GFLOP/s; 10 -> 2: JB=2 with 4, 6 vectors 88, 74), 8-12 of 8
 * floats with AVX2's 16 registers.  One source with 64-byte vectors compiled for AVX2 ran at
 * 2-5 GFLOP/s (spilled), hence one instance per width, picked at run time.  The build is ISO
 * C (-std=c11), where GCC does not fuse a*b + c; the instances ask for it (fp-contract=fast),
 * which took 10 -> 10 7x7 forward from 4.7 to 3.6 ms (a multiply and an add per term before). */
#define JB_MAX 6
/* 8 and 4 floats (AVX2, baseline SSE): 16 registers */
#define NV_HALF(JB) ((JB) <= 2 ? 4 : (JB) <= 3 ? 3 : 2)

#if ZNN_HAVE_CLONES  /* GCC on x86-64: instances for AVX-512 and AVX2 */
#define NW 16
#define NTARGET __attribute__((target("avx512f"), optimize("fp-contract=fast")))
#define NSFX(name) narrow16_##name
#define NV_OF(JB) ((JB) <= 3 ? 4 : (JB) <= 5 ? 3 : 2)
#define NTB_SMALL 4
#define NTB_LARGE 8
#include "direct_narrow.inc"

#define NW 8
#define NTARGET __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
#define NSFX(name) narrow8_##name
#define NV_OF NV_HALF
#define NTB_SMALL 2
#define NTB_LARGE 4
#include "direct_narrow.inc"
#endif

#define NW 4
#define NTARGET
#define NSFX(name) narrow4_##name
#define NV_OF NV_HALF
#define NTB_SMALL 2
#define NTB_LARGE 4
#include "direct_narrow.inc"

typedef void (*narrow_row_fn)(const float *, int64_t, int64_t, const float *, int64_t,
                              const int64_t *, int64_t, float *, int64_t, int64_t, int64_t, int);
typedef void (*narrow_wblock_fn)(const float *, const float *const *, const int64_t *,
                                 const int64_t *, int64_t, int64_t, int64_t, int64_t, float *,
                                 float *);

/* The instances to run: the widest this CPU has (znn_simd_clone), or ZNN_NARROW_WIDTH=16|8|4
 * (read per call; tests run every instance the CPU can). */
typedef struct {
    narrow_row_fn row;
    const narrow_wblock_fn (*wblocks)[4];  /* [large][JB] */
    int tb[2];                             /* taps per weight block: small, large */
    int width;                             /* floats per vector */
} narrow_impl;

static narrow_impl narrow_pick(void)
{
    const char *env = getenv("ZNN_NARROW_WIDTH");
    int w = env ? atoi(env) : 0;
    const int simd = znn_simd_clone();
    const int best = simd >= 2 ? 16 : simd == 1 ? 8 : 4;
    if ((w != 16 && w != 8 && w != 4) || w > best) w = best;
#if ZNN_HAVE_CLONES
    if (w == 16) return (narrow_impl){narrow16_row, narrow16_wblocks, {4, 8}, 16};
    if (w == 8) return (narrow_impl){narrow8_row, narrow8_wblocks, {2, 4}, 8};
#endif
    return (narrow_impl){narrow4_row, narrow4_wblocks, {2, 4}, 4};
}

int znn_narrow_width(void) { return narrow_pick().width; }

/* Output rows per work item of the forward kernel: the items are runs of whole rows (all
 * map blocks of each), so two threads write the ends of one map's adjacent rows, which share
 * a cache line, once per NARROW_ROWS rows.  Items of one (row, map block) had them do so on
 * every row: 1->48 4x4 over 155x155 took 1.1 ms on two threads against 0.57 ms on one. */
#define NARROW_ROWS 4

/* Map blocks: n_dst split into blocks of at most JB_MAX, as even as possible (10 -> 5+5). */
static int64_t map_blocks(int64_t n) { return (n + JB_MAX - 1) / JB_MAX; }

int znn_narrow_conv_s(const float *src, int64_t n_src, int64_t vin, int64_t sz, int64_t sy,
                      const float *wr, int64_t n_dst, const int64_t *off, int64_t T,
                      float *y, const int64_t *out, int accumulate, int nthreads)
{
    const int64_t Zo = out[0], Yo = out[1], Xo = out[2], vout = Zo * Yo * Xo;
    if (Xo < ZNN_NARROW_MIN_X)
        return znn_fail(ZNN_ERR_ARG, "narrow conv: rows of %lld points, need %d",
                        (long long)Xo, ZNN_NARROW_MIN_X);
    const int64_t nb = map_blocks(n_dst), rows = Zo * Yo;
    const int64_t items = (rows + NARROW_ROWS - 1) / NARROW_ROWS;
    const narrow_row_fn row = narrow_pick().row;
    #pragma omp parallel for num_threads(znn_threads(nthreads)) schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++)
        for (int64_t r = it * NARROW_ROWS; r < min64(rows, (it + 1) * NARROW_ROWS); r++)
            for (int64_t b = 0; b < nb; b++) {
                const int64_t z = r / Yo, yy = r % Yo;
                const int64_t j0 = b * n_dst / nb, jb = (b + 1) * n_dst / nb - j0;
                row(src + z * sz + yy * sy, n_src, vin, wr + j0, n_dst, off, T,
                    y + j0 * vout + (z * Yo + yy) * Xo, vout, Xo, jb, accumulate);
            }
    return ZNN_OK;
}

/* Output rows per band of the weight gradient: every tap block of a work item runs over a
 * band before the next, so its rows of g and x are read from L1 (at most 8 KiB per map). */
static int64_t band_rows(int64_t Xo) { return max64(1, min64(8, 2048 / max64(1, Xo))); }

int znn_narrow_weight_s(const float *x, int64_t n_in, int64_t vin, int64_t sz, int64_t sy,
                        const float *g, int64_t n_out, const int64_t *off, int64_t T,
                        float *dw, const int64_t *out, int accumulate, int nthreads)
{
    const int64_t vout = out[0] * out[1] * out[2], rows = out[0] * out[1];
    const narrow_impl im = narrow_pick();
    /* taps per block: the size that leaves fewer empty slots in the last block (the larger
     * on a tie); empty slots repeat the block's last tap and are not stored */
    const int64_t ws = (T + im.tb[0] - 1) / im.tb[0] * im.tb[0];
    const int64_t wl = (T + im.tb[1] - 1) / im.tb[1] * im.tb[1];
    const int large = wl <= ws;
    const int64_t TB = im.tb[large], ntg = (T + TB - 1) / TB, nbj = (n_out + 2) / 3;
    const int64_t items = n_in * nbj, slots = ntg * 3 * TB, band = band_rows(out[2]);
    int64_t *o = znn_malloc((size_t)(ntg * TB) * sizeof(int64_t));  /* offsets, blocks padded */
    if (!o) return znn_fail(ZNN_ERR_NOMEM, "direct backward_weight: out of memory for offsets");
    for (int64_t u = 0; u < ntg * TB; u++) o[u] = off[min64(u, T - 1)];
    int err = ZNN_OK;
    #pragma omp parallel num_threads((int)min64(znn_threads(nthreads), items))
    {
        float *acc = znn_malloc((size_t)(slots * (im.width + 1)) * sizeof(float));
        if (!acc) {
            #pragma omp atomic write
            err = znn_fail(ZNN_ERR_NOMEM, "direct backward_weight: out of memory for sums");
        }
        #pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!acc) continue;
            const int64_t i = it / nbj, b = it % nbj;
            const int64_t j0 = b * n_out / nbj, jb = (b + 1) * n_out / nbj - j0;
            float *tail = acc + slots * im.width;
            const float *gp[3];
            for (int64_t j = 0; j < jb; j++) gp[j] = g + (j0 + j) * vout;
            memset(acc, 0, (size_t)(slots * (im.width + 1)) * sizeof(float));
            for (int64_t r0 = 0; r0 < rows; r0 += band)
                for (int64_t tg = 0; tg < ntg; tg++)
                    im.wblocks[large][jb](x + i * vin, gp, o + tg * TB, out, sz, sy, r0,
                                          min64(rows, r0 + band),
                                          acc + tg * 3 * TB * im.width, tail + tg * 3 * TB);
            for (int64_t tg = 0; tg < ntg; tg++)
                for (int64_t j = 0; j < jb; j++)
                    for (int64_t u = 0; u < TB && tg * TB + u < T; u++) {
                        const int64_t k = tg * 3 * TB + j * TB + u;
                        float sum = 0;
                        for (int l = 0; l < im.width; l++) sum += acc[k * im.width + l];
                        float *d = dw + ((i * n_out + j0 + j) * T + tg * TB + u);
                        *d = (accumulate ? *d : 0) + sum + tail[k];
                    }
        }
        znn_free(acc);
    }
    znn_free(o);
    return err;
}
