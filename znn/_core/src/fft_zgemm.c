/* Z-factored spectral convolution on MKL complex GEMMs: partial kernel spectra, MACs, dW. */
#define _GNU_SOURCE /* madvise */
#include "fft_zgemm.h"

#include <limits.h>
#include <math.h>
#include <mkl.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ZG_CAT2(a, b) a##b
#define ZG_CAT(a, b) ZG_CAT2(a, b)

static inline int64_t zg_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t zg_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* 64-byte aligned scratch (MKL's kernels may round differently on differently aligned data,
 * so every thread gets the same alignment): returns the aligned pointer, *raw to free. */
static void *zg_alloc(size_t bytes, void **raw)
{
    *raw = znn_malloc(bytes + 64);
    if (!*raw) return NULL;
#ifdef MADV_HUGEPAGE
    /* Large scratch is touched once per call: 2 MiB pages make its first touch far cheaper
     * (advice only; ignored where transparent huge pages are off). */
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (bytes >= 2 * huge) {
        uintptr_t a = ((uintptr_t)*raw + huge - 1) & ~(huge - 1);
        uintptr_t b = ((uintptr_t)*raw + bytes) & ~(huge - 1);
        if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
    }
#endif
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

/* One block of large scratch (the weight gradient's transposed inputs and y-stage result)
 * is kept between calls so that its pages are not faulted in and zeroed again every call.
 * A call that finds it busy or too small allocates its own, and the larger idle one is kept
 * when it is given back (up to ZG_KEEP_MAX bytes).  znn_fft_zgemm_release_scratch frees it. */
#define ZG_KEEP_MAX ((size_t)1 << 30)
static void *g_keep_raw = NULL;
static size_t g_keep_bytes = 0;
static int g_keep_busy = 0;

static void *zg_take(size_t bytes, void **raw)
{
    void *p = NULL;
    #pragma omp critical(znn_zgemm_scratch)
    {
        if (!g_keep_busy && g_keep_raw && g_keep_bytes >= bytes) {
            g_keep_busy = 1;
            p = g_keep_raw;
        }
    }
    if (!p) return zg_alloc(bytes, raw);
    *raw = p;
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static void zg_give(void *raw, size_t bytes)
{
    if (!raw) return;
    void *drop = raw;
    #pragma omp critical(znn_zgemm_scratch)
    {
        if (raw == g_keep_raw) {
            g_keep_busy = 0;
            drop = NULL;
        } else if (!g_keep_busy && bytes > g_keep_bytes && bytes <= ZG_KEEP_MAX) {
            drop = g_keep_raw;
            g_keep_raw = raw;
            g_keep_bytes = bytes;
        }
    }
    znn_free(drop);
}

int64_t znn_fft_zgemm_release_scratch(void)
{
    int64_t freed = 0;
    void *drop = NULL;
    #pragma omp critical(znn_zgemm_scratch)
    {
        if (g_keep_raw && !g_keep_busy) {
            drop = g_keep_raw;
            freed = (int64_t)g_keep_bytes;
            g_keep_raw = NULL;
            g_keep_bytes = 0;
        }
    }
    znn_free(drop);
    return freed;
}

int64_t znn_fft_zgemm_scratch_bytes(void)
{
    int64_t b;
    #pragma omp critical(znn_zgemm_scratch)
    b = g_keep_raw ? (int64_t)g_keep_bytes : 0;
    return b;
}

/* Shapes of a layer: counts >= 0, k, d, n >= 1, the dilated kernel fits n. */
static int zg_check(const char *fn, int64_t ni, int64_t no, const int64_t k[3],
                    const int64_t d[3], const int64_t n[3])
{
    if (ni < 0 || no < 0)
        return znn_fail(ZNN_ERR_ARG, "%s: negative map count (ni=%lld, no=%lld)", fn,
                        (long long)ni, (long long)no);
    for (int a = 0; a < 3; a++) {
        if (k[a] < 1 || d[a] < 1 || n[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "%s: axis %d: k=%lld d=%lld n=%lld must be >= 1", fn, a,
                            (long long)k[a], (long long)d[a], (long long)n[a]);
        if ((k[a] - 1) * d[a] + 1 > n[a])
            return znn_fail(ZNN_ERR_ARG, "%s: axis %d: kernel %lld dilated by %lld exceeds FFT "
                            "size %lld", fn, a, (long long)k[a], (long long)d[a],
                            (long long)n[a]);
    }
    return ZNN_OK;
}

/* Layer geometry after the Z == 1 relabelling: a plane (1, Y, X) is computed as (Y, 1, X)
 * with kernel (ky, 1, kx) and dilation (dy, 1, dx), which has the same memory layout for
 * maps, spectra and kernels; y then takes the role of z (one GEMM over fy per fx column). */
static void zg_geometry(const int64_t n_[3], const int64_t k_[3], const int64_t d_[3],
                        int64_t n[3], int64_t k[3], int64_t d[3])
{
    for (int a = 0; a < 3; a++) {
        n[a] = n_[a];
        k[a] = k_[a];
        d[a] = d_[a];
    }
    if (n[0] == 1) {  /* then k[0] == 1 */
        n[0] = n[1]; k[0] = k[1]; d[0] = d[1];
        n[1] = 1; k[1] = 1; d[1] = 1;
    }
}

/* Every GEMM dimension / leading dimension must fit MKL_INT (32-bit with LP64). */
static int zg_fits(const char *fn, int64_t v)
{
    if (v > INT_MAX)
        return znn_fail(ZNN_ERR_ARG, "%s: GEMM dimension %lld exceeds INT_MAX", fn, (long long)v);
    return ZNN_OK;
}

/* Override of every work-split size (columns per block, fy per chunk, rows per chunk), for
 * tests (many small tasks on small layers) and tuning; read per call, 0 when unset. */
static int64_t zg_override(void)
{
    const char *env = getenv("ZNN_ZGEMM_CHUNK");
    return env && atol(env) > 0 ? atol(env) : 0;
}

/* Split size: `bytes_target` / `unit` clamped to [lo, hi], or the override. */
static int64_t zg_split(int64_t bytes_target, int64_t unit, int64_t lo, int64_t hi)
{
    const int64_t o = zg_override();
    if (o) return o;
    return zg_max(lo, zg_min(hi, bytes_target / zg_max(1, unit)));
}

#define REAL float
#define SFX _s
#define GEMM cblas_cgemm
#define GEMM_BATCH cblas_cgemm_batch_strided
#include "fft_zgemm.inc"
#undef REAL
#undef SFX
#undef GEMM
#undef GEMM_BATCH

#define REAL double
#define SFX _d
#define GEMM cblas_zgemm
#define GEMM_BATCH cblas_zgemm_batch_strided
#include "fft_zgemm.inc"
#undef REAL
#undef SFX
#undef GEMM
#undef GEMM_BATCH
