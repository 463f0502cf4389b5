/* Max filter / max pool kernels: float and double instances of pool_impl.inc. */
#include "pool.h"
#include "common.h"

#include <omp.h>
#include <string.h>

/* Outputs per work item of one tap operation (keeps the running max in L1). */
#define POOL_CHUNK 2048

static int pool_check_sizes(const char *what, int64_t C, const int64_t in[3],
                            const int64_t k[3], const int64_t d[3])
{
    if (C < 0) return znn_fail(ZNN_ERR_ARG, "%s: negative channel count", what);
    for (int a = 0; a < 3; a++) {
        if (k[a] < 1) return znn_fail(ZNN_ERR_ARG, "%s: size[%d] = %lld must be >= 1", what, a,
                                      (long long)k[a]);
        if (d && d[a] < 1)
            return znn_fail(ZNN_ERR_ARG, "%s: dilation[%d] = %lld must be >= 1", what, a,
                            (long long)d[a]);
        int64_t span = d ? (k[a] - 1) * d[a] + 1 : k[a];
        if (in[a] < span)
            return znn_fail(ZNN_ERR_ARG, "%s: input extent %lld along axis %d is smaller than "
                            "the window %lld", what, (long long)in[a], a, (long long)span);
        if (!d && in[a] % k[a] != 0)
            return znn_fail(ZNN_ERR_ARG, "%s: input extent %lld along axis %d is not a multiple "
                            "of size %lld", what, (long long)in[a], a, (long long)k[a]);
    }
    return ZNN_OK;
}

#define REAL float
#define SUF(name) name##_s
#include "pool_impl.inc"
#undef REAL
#undef SUF

#define REAL double
#define SUF(name) name##_d
#include "pool_impl.inc"
#undef REAL
#undef SUF
