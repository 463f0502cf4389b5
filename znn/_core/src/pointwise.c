/* Element-wise kernels: float and double instances of pointwise_impl.inc, dropout hash. */
#include "pointwise.h"
#include "common.h"

#include <math.h>
#include <mkl_vml.h>
#include <string.h>

/* Elements per work item; blocks never depend on the thread count. */
#define PW_BLOCK 4096
#define PW_MODE (VML_HA | VML_ERRMODE_NOERR)

/* Bit mixer of splitmix64 (Steele, Lea, Flood 2014). */
static inline uint64_t pw_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define PW_GOLDEN 0x9E3779B97F4A7C15ULL

/* 1 when element i of the stream `key` is kept: top 32 bits of the hash < threshold. */
static inline uint8_t pw_keep(uint64_t key, uint64_t i, uint64_t threshold)
{
    return (pw_mix64(key + (i + 1) * PW_GOLDEN) >> 32) < threshold;
}

/* The compare/hash loops vectorize well only with AVX2 / AVX-512: ZNN_CLONES (common.h).
 * m[i] = keep flag of element i0 + i, i < len. */
ZNN_CLONES
static void pw_mask_block(uint8_t *restrict m, int64_t i0, int64_t len, uint64_t key,
                          uint64_t threshold)
{
    for (int64_t i = 0; i < len; i++) m[i] = pw_keep(key, (uint64_t)(i0 + i), threshold);
}

static int pw_dropout_setup(const char *what, double keep, uint64_t seed, uint64_t *key,
                            uint64_t *threshold)
{
    if (!(keep > 0.0 && keep <= 1.0))
        return znn_fail(ZNN_ERR_ARG, "%s: keep = %g must be in (0, 1]", what, keep);
    *key = pw_mix64(seed ^ 0x5851F42D4C957F2DULL);
    *threshold = (uint64_t)ldexp(keep, 32);   /* keep = 1 -> 2^32: every element kept */
    return ZNN_OK;
}

int znn_dropout_mask(int64_t total, double keep, uint64_t seed, uint8_t *mask, int nthreads)
{
    uint64_t key, thr;
    int st = pw_dropout_setup("dropout_mask", keep, seed, &key, &thr);
    if (st) return st;
    const int nt = znn_threads(nthreads);
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < total; b += PW_BLOCK)
        pw_mask_block(mask + b, b, total - b < PW_BLOCK ? total - b : PW_BLOCK, key, thr);
    return ZNN_OK;
}

static int pw_check(const char *what, int func)
{
    if (func < 0 || func >= ZNN_FN_COUNT)
        return znn_fail(ZNN_ERR_ARG, "%s: unknown transfer function code %d", what, func);
    return ZNN_OK;
}

#define REAL float
#define SUF(name) name##_s
#define VML(name) vms##name
#include "pointwise_impl.inc"
#undef REAL
#undef SUF
#undef VML

#define REAL double
#define SUF(name) name##_d
#define VML(name) vmd##name
#include "pointwise_impl.inc"
#undef REAL
#undef SUF
#undef VML
