/* FFT plan cache over MKL DFTI or MKL's FFTW3 interface (see fft_plan.h). */
#include "fft_plan.h"

#include <string.h>

#include <mkl_service.h>

#if ZNN_USE_MKL_NATIVE_FFT
#include <mkl_dfti.h>
#define ZNN_FFT_BACKEND_NAME "mkl-dfti"
#elif ZNN_USE_MKL_FFT
#include <fftw/fftw3.h>
#define ZNN_FFT_BACKEND_NAME "mkl-fftw3"
#else
#error "znn FFT kernels need MKL's FFT: ZNN_USE_MKL_NATIVE_FFT and ZNN_USE_MKL_FFT are both 0; \
build with ZNN_USE_MKL_NATIVE_FFT=1 (MKL DFTI, the default) or with \
ZNN_USE_MKL_NATIVE_FFT=0 ZNN_USE_MKL_FFT=1 (MKL's FFTW3 interface)"
#endif

struct znn_fft_plan {
    int64_t n[3];
    int real_size;
    int64_t howmany;
    int nthreads;
    int busy;
    struct znn_fft_plan *next;
#if ZNN_USE_MKL_NATIVE_FFT
    DFTI_DESCRIPTOR_HANDLE desc;
#else
    void *fwd;          /* fftwf_plan / fftw_plan */
    void *bwd;          /* c2r with FFTW_PRESERVE_INPUT (MKL keeps the input) */
#endif
};

static znn_fft_plan *g_plans = NULL;
static int g_strategy = 0;

const char *znn_fft_backend(void) { return ZNN_FFT_BACKEND_NAME; }

int znn_fft_set_strategy(int strategy)
{
    int old = g_strategy;
    g_strategy = (strategy >= 0 && strategy <= 2) ? strategy : 0;
    return old;
}

int znn_fft_get_strategy(void) { return g_strategy; }

/* Transform rank after dropping leading axes of length 1 (x is always kept). */
static int reduced_rank(const int64_t *n)
{
    int first = 0;
    while (first < 2 && n[first] == 1) first++;
    return 3 - first;
}

#if ZNN_USE_MKL_NATIVE_FFT

static int dfti_check(MKL_LONG status, const char *what)
{
    if (status != 0 && !DftiErrorClass(status, DFTI_NO_ERROR))
        return znn_fail(ZNN_ERR_MKL, "MKL DFTI %s failed: %s", what, DftiErrorMessage(status));
    return ZNN_OK;
}

static int backend_create(znn_fft_plan *p)
{
    const int64_t *n = p->n;
    int rank = reduced_rank(n), first = 3 - rank;
    int64_t xh = n[2] / 2 + 1;
    MKL_LONG lengths[3], rstrides[4] = {0}, cstrides[4] = {0};
    int64_t rs = 1, cs = 1;
    for (int a = 2; a >= first; a--) {
        lengths[a - first] = (MKL_LONG)n[a];
        rstrides[1 + a - first] = (MKL_LONG)rs;
        cstrides[1 + a - first] = (MKL_LONG)cs;
        rs *= n[a];
        cs *= (a == 2) ? xh : n[a];
    }
    enum DFTI_CONFIG_VALUE prec = p->real_size == 4 ? DFTI_SINGLE : DFTI_DOUBLE;
    DFTI_DESCRIPTOR_HANDLE h = NULL;
    MKL_LONG st;
    if (rank == 1)
        st = prec == DFTI_SINGLE ? DftiCreateDescriptor_s_1d(&h, DFTI_REAL, lengths[0])
                                 : DftiCreateDescriptor_d_1d(&h, DFTI_REAL, lengths[0]);
    else
        st = prec == DFTI_SINGLE ? DftiCreateDescriptor_s_md(&h, DFTI_REAL, rank, lengths)
                                 : DftiCreateDescriptor_d_md(&h, DFTI_REAL, rank, lengths);
    int rc = dfti_check(st, "create descriptor");
    if (rc) return rc;
    rc = dfti_check(DftiSetValue(h, DFTI_CONJUGATE_EVEN_STORAGE, DFTI_COMPLEX_COMPLEX),
                    "set DFTI_CONJUGATE_EVEN_STORAGE");
    if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_PLACEMENT, DFTI_NOT_INPLACE),
                             "set DFTI_PLACEMENT");
    if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_FWD_STRIDES, rstrides), "set DFTI_FWD_STRIDES");
    if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_BWD_STRIDES, cstrides), "set DFTI_BWD_STRIDES");
    if (!rc && p->howmany > 1) {
        rc = dfti_check(DftiSetValue(h, DFTI_NUMBER_OF_TRANSFORMS, (MKL_LONG)p->howmany),
                        "set DFTI_NUMBER_OF_TRANSFORMS");
        if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_FWD_DISTANCE, (MKL_LONG)rs),
                                 "set DFTI_FWD_DISTANCE");
        if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_BWD_DISTANCE, (MKL_LONG)cs),
                                 "set DFTI_BWD_DISTANCE");
    }
    if (!rc) rc = dfti_check(DftiSetValue(h, DFTI_THREAD_LIMIT, (MKL_LONG)p->nthreads),
                             "set DFTI_THREAD_LIMIT");
    if (!rc) rc = dfti_check(DftiCommitDescriptor(h), "commit descriptor");
    if (rc) {
        DftiFreeDescriptor(&h);
        return rc;
    }
    p->desc = h;
    return ZNN_OK;
}

static void backend_free(znn_fft_plan *p)
{
    if (p->desc) DftiFreeDescriptor(&p->desc);
}

int znn_fft_plan_r2c(znn_fft_plan *p, const void *in, void *out)
{
    int prev = p->nthreads > 1 ? mkl_set_num_threads_local(p->nthreads) : 0;
    MKL_LONG st = DftiComputeForward(p->desc, (void *)in, out);
    if (p->nthreads > 1) mkl_set_num_threads_local(prev);
    return dfti_check(st, "forward transform");
}

int znn_fft_plan_c2r(znn_fft_plan *p, const void *in, void *out)
{
    /* DFTI_DESTROY_INPUT defaults to DFTI_AVOID: the input spectrum is preserved. */
    int prev = p->nthreads > 1 ? mkl_set_num_threads_local(p->nthreads) : 0;
    MKL_LONG st = DftiComputeBackward(p->desc, (void *)in, out);
    if (p->nthreads > 1) mkl_set_num_threads_local(prev);
    return dfti_check(st, "backward transform");
}

#else /* MKL's FFTW3 interface */

static int g_fftw_threads_ready = 0;

static int backend_create(znn_fft_plan *p)
{
    const int64_t *n = p->n;
    int rank = reduced_rank(n), first = 3 - rank;
    int dims[3];
    for (int a = first; a < 3; a++) dims[a - first] = (int)n[a];
    int rdist = (int)znn_vol3(n), cdist = (int)znn_fft_spectrum_size(n), hm = (int)p->howmany;
    /* Plans are made with FFTW_ESTIMATE, which never touches the arrays; execution always
     * passes the real arrays (fftw_execute_dft_*), so any distinct aligned buffers do. */
    static double dummy_in[16] __attribute__((aligned(64)));
    static double dummy_out[16] __attribute__((aligned(64)));
    if (!g_fftw_threads_ready) {
        if (!fftwf_init_threads() || !fftw_init_threads())
            return znn_fail(ZNN_ERR_MKL, "MKL FFTW3 interface: fftw_init_threads failed");
        g_fftw_threads_ready = 1;
    }
    unsigned flags = FFTW_ESTIMATE;
    if (p->real_size == 4) {
        fftwf_plan_with_nthreads(p->nthreads);
        p->fwd = fftwf_plan_many_dft_r2c(rank, dims, hm, (float *)dummy_in, NULL, 1, rdist,
                                         (fftwf_complex *)dummy_out, NULL, 1, cdist, flags);
        p->bwd = fftwf_plan_many_dft_c2r(rank, dims, hm, (fftwf_complex *)dummy_out, NULL, 1,
                                         cdist, (float *)dummy_in, NULL, 1, rdist,
                                         flags | FFTW_PRESERVE_INPUT);
        fftwf_plan_with_nthreads(1);
    } else {
        fftw_plan_with_nthreads(p->nthreads);
        p->fwd = fftw_plan_many_dft_r2c(rank, dims, hm, dummy_in, NULL, 1, rdist,
                                        (fftw_complex *)dummy_out, NULL, 1, cdist, flags);
        p->bwd = fftw_plan_many_dft_c2r(rank, dims, hm, (fftw_complex *)dummy_out, NULL, 1, cdist,
                                        dummy_in, NULL, 1, rdist, flags | FFTW_PRESERVE_INPUT);
        fftw_plan_with_nthreads(1);
    }
    if (!p->fwd || !p->bwd)
        return znn_fail(ZNN_ERR_MKL, "MKL FFTW3 interface: could not plan a %dD transform of "
                        "(%lld, %lld, %lld) x %lld", rank, (long long)n[0], (long long)n[1],
                        (long long)n[2], (long long)p->howmany);
    return ZNN_OK;
}

static void backend_free(znn_fft_plan *p)
{
    if (p->real_size == 4) {
        if (p->fwd) fftwf_destroy_plan((fftwf_plan)p->fwd);
        if (p->bwd) fftwf_destroy_plan((fftwf_plan)p->bwd);
    } else {
        if (p->fwd) fftw_destroy_plan((fftw_plan)p->fwd);
        if (p->bwd) fftw_destroy_plan((fftw_plan)p->bwd);
    }
}

int znn_fft_plan_r2c(znn_fft_plan *p, const void *in, void *out)
{
    if (p->real_size == 4)
        fftwf_execute_dft_r2c((fftwf_plan)p->fwd, (float *)in, (fftwf_complex *)out);
    else
        fftw_execute_dft_r2c((fftw_plan)p->fwd, (double *)in, (fftw_complex *)out);
    return ZNN_OK;
}

int znn_fft_plan_c2r(znn_fft_plan *p, const void *in, void *out)
{
    if (p->real_size == 4)
        fftwf_execute_dft_c2r((fftwf_plan)p->bwd, (fftwf_complex *)in, (float *)out);
    else
        fftw_execute_dft_c2r((fftw_plan)p->bwd, (fftw_complex *)in, (double *)out);
    return ZNN_OK;
}

#endif

static int plan_matches(const znn_fft_plan *p, const int64_t *n, int real_size, int64_t howmany,
                        int nthreads)
{
    return !p->busy && p->n[0] == n[0] && p->n[1] == n[1] && p->n[2] == n[2] &&
           p->real_size == real_size && p->howmany == howmany && p->nthreads == nthreads;
}

int znn_fft_plan_acquire(const int64_t n[3], int real_size, int64_t howmany, int nthreads,
                         znn_fft_plan **plan)
{
    *plan = NULL;
    if (n[0] < 1 || n[1] < 1 || n[2] < 1 || howmany < 1 || (real_size != 4 && real_size != 8))
        return znn_fail(ZNN_ERR_ARG, "FFT plan: bad shape (%lld, %lld, %lld) x %lld",
                        (long long)n[0], (long long)n[1], (long long)n[2], (long long)howmany);
    if (nthreads < 1) nthreads = 1;
    int rc = ZNN_OK;
    znn_fft_plan *found = NULL;
    #pragma omp critical(znn_fft_plans)
    {
        for (znn_fft_plan *p = g_plans; p; p = p->next)
            if (plan_matches(p, n, real_size, howmany, nthreads)) {
                found = p;
                break;
            }
        if (!found) {
            /* Created under the lock: FFTW's planner is not thread-safe. */
            znn_fft_plan *p = znn_calloc(sizeof *p);
            if (!p) {
                rc = znn_fail(ZNN_ERR_NOMEM, "FFT plan: out of memory");
            } else {
                memcpy(p->n, n, sizeof p->n);
                p->real_size = real_size;
                p->howmany = howmany;
                p->nthreads = nthreads;
                rc = backend_create(p);
                if (rc) {
                    znn_free(p);
                } else {
                    p->next = g_plans;
                    g_plans = p;
                    found = p;
                }
            }
        }
        if (found) found->busy = 1;
    }
    *plan = found;
    return rc;
}

void znn_fft_plan_release(znn_fft_plan *plan)
{
    if (!plan) return;
    #pragma omp critical(znn_fft_plans)
    plan->busy = 0;
}

int znn_fft_plan_cache_clear(void)
{
    int freed = 0;
    #pragma omp critical(znn_fft_plans)
    {
        znn_fft_plan **link = &g_plans;
        while (*link) {
            znn_fft_plan *p = *link;
            if (p->busy) {
                link = &p->next;
                continue;
            }
            *link = p->next;
            backend_free(p);
            znn_free(p);
            freed++;
        }
    }
    return freed;
}

int znn_fft_plan_cache_size(void)
{
    int count = 0;
    #pragma omp critical(znn_fft_plans)
    for (znn_fft_plan *p = g_plans; p; p = p->next) count++;
    return count;
}
