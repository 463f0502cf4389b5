/* Register-blocked direct convolution for layers with few maps (see direct_narrow.h). */
#include "direct_narrow.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Vectors per block row for JB maps, sized to the register file: about 12-16 accumulators
 * of 16 floats with AVX-512 (one AVX-512 core, 10 -> 10 7x7 on 200x200: JB=5 with 2, 3
 * vectors 71, 86 GFLOP/s; 10 -> 2: JB=2 with 4, 6 vectors 88, 74), 8-12 of 8 floats with
 * AVX2's 16 registers.  One source with 64-byte vectors compiled for AVX2 ran at 2-5 GFLOP/s
 * (spilled), hence one instance per width, picked at run time. */
#define JB_MAX 6

#if ZNN_HAVE_CLONES  /* GCC on x86-64: instances for AVX-512 and AVX2 */
#define NW 16
#define NTARGET __attribute__((target("avx512f")))
#define NSFX(name) narrow16_##name
#define NV_OF(JB) ((JB) <= 3 ? 4 : (JB) <= 5 ? 3 : 2)
#include "direct_narrow.inc"
#undef NW
#undef NTARGET
#undef NSFX
#undef NV_OF

#define NW 8
#define NTARGET __attribute__((target("avx2,fma")))
#define NSFX(name) narrow8_##name
#define NV_OF(JB) ((JB) <= 2 ? 4 : (JB) <= 3 ? 3 : 2)
#include "direct_narrow.inc"
#undef NW
#undef NTARGET
#undef NSFX
#undef NV_OF
#endif

#define NW 4
#define NTARGET
#define NSFX(name) narrow4_##name
#define NV_OF(JB) ((JB) <= 2 ? 4 : (JB) <= 3 ? 3 : 2)
#include "direct_narrow.inc"
#undef NW
#undef NTARGET
#undef NSFX
#undef NV_OF

typedef void (*narrow_row_fn)(const float *, int64_t, int64_t, const float *, int64_t,
                              const int64_t *, int64_t, float *, int64_t, int64_t, int64_t, int);

/* The widest instance this CPU runs (znn_simd_clone), or ZNN_NARROW_WIDTH=16|8|4 (read per
 * call; tests run every instance the CPU can). */
static narrow_row_fn narrow_row(void)
{
    const char *env = getenv("ZNN_NARROW_WIDTH");
    int w = env ? atoi(env) : 0;
    const int simd = znn_simd_clone();
    const int best = simd >= 2 ? 16 : simd == 1 ? 8 : 4;
    if (w != 16 && w != 8 && w != 4) w = best;
    if (w > best) w = best;
#if ZNN_HAVE_CLONES
    return w == 16 ? narrow16_row : w == 8 ? narrow8_row : narrow4_row;
#else
    return narrow4_row;
#endif
}

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
    const int64_t nb = map_blocks(n_dst), rows = Zo * Yo, items = rows * nb;
    const narrow_row_fn row = narrow_row();
    #pragma omp parallel for num_threads(znn_threads(nthreads)) schedule(dynamic, 4)
    for (int64_t it = 0; it < items; it++) {
        const int64_t r = it / nb, b = it % nb, z = r / Yo, yy = r % Yo;
        const int64_t j0 = b * n_dst / nb, jb = (b + 1) * n_dst / nb - j0;
        row(src + z * sz + yy * sy, n_src, vin, wr + j0, n_dst, off, T,
            y + j0 * vout + (z * Yo + yy) * Xo, vout, Xo, jb, accumulate);
    }
    return ZNN_OK;
}
