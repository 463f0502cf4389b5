/* Block gather / scatter (see blocks.h). */
#include "blocks.h"
#include "common.h"

#include <omp.h>
#include <string.h>

/* n values from src (step s values) to dst (step t values), es bytes each. */
static void copy_run(char *dst, int64_t t, const char *src, int64_t s, int64_t n, size_t es)
{
    if (s == 1 && t == 1) {
        memcpy(dst, src, (size_t)n * es);
    } else if (es == 4) {
        float *o = (float *)dst;
        const float *i = (const float *)src;
        for (int64_t k = 0; k < n; k++) o[k * t] = i[k * s];
    } else {
        double *o = (double *)dst;
        const double *i = (const double *)src;
        for (int64_t k = 0; k < n; k++) o[k * t] = i[k * s];
    }
}

/* Positions o + d*a, a < n, that are inside [0, size): how many (from a = 0). */
static int64_t inside(int64_t o, int64_t d, int64_t n, int64_t size)
{
    if (o >= size) return 0;
    int64_t m = (size - o + d - 1) / d;
    return m < n ? m : n;
}

static int check_es(const char *fn, size_t es)
{
    if (es != 4 && es != 8)
        return znn_fail(ZNN_ERR_ARG, "%s: element size %zu (4 or 8 expected)", fn, es);
    return ZNN_OK;
}

int znn_blocks_gather(const void *x, size_t es, int64_t C, const int64_t shape[3],
                      const int64_t *origins, int64_t P, const int64_t d[3],
                      const int64_t L[3], void *out, int nthreads)
{
    int rc = check_es("blocks_gather", es);
    if (rc) return rc;
    for (int64_t p = 0; p < P; p++)
        for (int a = 0; a < 3; a++)
            if (origins[3 * p + a] < 0 || d[a] < 1 || L[a] < 1)
                return znn_fail(ZNN_ERR_ARG, "blocks_gather: block %lld axis %d: origin %lld, "
                                "step %lld, length %lld", (long long)p, a,
                                (long long)origins[3 * p + a], (long long)d[a], (long long)L[a]);
    const int64_t vol = shape[0] * shape[1] * shape[2], bvol = L[0] * L[1] * L[2];
    const int64_t sy = shape[2], sz = shape[1] * shape[2];
    #pragma omp parallel for schedule(dynamic, 1) num_threads(znn_threads(nthreads))
    for (int64_t cp = 0; cp < C * P; cp++) {
        const int64_t c = cp / P, p = cp % P;
        const int64_t *o = origins + 3 * p;
        const char *xc = (const char *)x + (size_t)(c * vol) * es;
        char *ob = (char *)out + (size_t)(cp * bvol) * es;
        const int64_t nz = inside(o[0], d[0], L[0], shape[0]);
        const int64_t ny = inside(o[1], d[1], L[1], shape[1]);
        const int64_t nx = inside(o[2], d[2], L[2], shape[2]);
        if (nz < L[0] || ny < L[1] || nx < L[2]) memset(ob, 0, (size_t)bvol * es);
        for (int64_t a = 0; a < nz; a++)
            for (int64_t b = 0; b < ny; b++) {
                const int64_t src = (o[0] + d[0] * a) * sz + (o[1] + d[1] * b) * sy + o[2];
                copy_run(ob + (size_t)((a * L[1] + b) * L[2]) * es, 1, xc + (size_t)src * es,
                         d[2], nx, es);
            }
    }
    return ZNN_OK;
}

int znn_blocks_scatter(const void *blk, size_t es, int64_t C, int64_t P, const int64_t V[3],
                       const int64_t *origins, const int64_t *counts, const int64_t d[3],
                       void *y, const int64_t shape[3], int nthreads)
{
    int rc = check_es("blocks_scatter", es);
    if (rc) return rc;
    for (int64_t p = 0; p < P; p++)
        for (int a = 0; a < 3; a++) {
            const int64_t o = origins[3 * p + a], n = counts[3 * p + a];
            if (o < 0 || d[a] < 1 || n < 0 || n > V[a] || (n > 0 && o + d[a] * (n - 1) >= shape[a]))
                return znn_fail(ZNN_ERR_ARG, "blocks_scatter: block %lld axis %d: origin %lld, "
                                "count %lld, step %lld outside %lld (block %lld)", (long long)p,
                                a, (long long)o, (long long)n, (long long)d[a],
                                (long long)shape[a], (long long)V[a]);
        }
    const int64_t vol = shape[0] * shape[1] * shape[2], bvol = V[0] * V[1] * V[2];
    const int64_t sy = shape[2], sz = shape[1] * shape[2];
    #pragma omp parallel for schedule(dynamic, 1) num_threads(znn_threads(nthreads))
    for (int64_t cp = 0; cp < C * P; cp++) {
        const int64_t c = cp / P, p = cp % P;
        const int64_t *o = origins + 3 * p, *n = counts + 3 * p;
        char *yc = (char *)y + (size_t)(c * vol) * es;
        const char *ib = (const char *)blk + (size_t)(cp * bvol) * es;
        for (int64_t a = 0; a < n[0]; a++)
            for (int64_t b = 0; b < n[1]; b++) {
                const int64_t dst = (o[0] + d[0] * a) * sz + (o[1] + d[1] * b) * sy + o[2];
                copy_run(yc + (size_t)dst * es, d[2], ib + (size_t)((a * V[1] + b) * V[2]) * es,
                         1, n[2], es);
            }
    }
    return ZNN_OK;
}

