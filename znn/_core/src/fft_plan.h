/* FFT plans for znn's convolution kernels: 3D real<->half-complex transforms on MKL.
 *
 * Backend (compile time): ZNN_USE_MKL_NATIVE_FFT=1 -> MKL DFTI descriptors (3D DFTI_REAL,
 * DFTI_CONJUGATE_EVEN_STORAGE=DFTI_COMPLEX_COMPLEX, DFTI_NOT_INPLACE, explicit strides);
 * otherwise ZNN_USE_MKL_FFT=1 -> MKL's FFTW3 interface (fftw/fftw3.h, FFTW_ESTIMATE plans).
 *
 * Layout: a real volume n = (Z, Y, X) is C-contiguous (x fastest), N = Z*Y*X values; its
 * spectrum is (Z, Y, X/2+1) complex values, S of them, interleaved (re, im), C-contiguous.
 * A plan transforms `howmany` consecutive volumes (real distance N, complex distance S).
 * Transforms are unnormalised (forward then backward multiplies by N).
 *
 * Thread-safety: plans live in a process-wide cache keyed by (shape, precision, howmany,
 * nthreads) guarded by a lock.  znn_fft_plan_acquire() hands out a plan that no other
 * thread is using (creating one when every cached one is busy); the caller owns it until
 * znn_fft_plan_release().  So any number of threads (OpenMP or not) may run transforms
 * at once, each on its own plan instance.  A plan with nthreads == 1 computes on the
 * calling thread only (use it inside parallel regions); nthreads > 1 lets MKL thread the
 * transform(s) with that many threads.
 *
 * Status codes: ZNN_OK, ZNN_ERR_ARG (bad shape), ZNN_ERR_NOMEM, ZNN_ERR_MKL (message holds
 * MKL's text, from DftiErrorMessage for DFTI).
 */
#ifndef ZNN_FFT_PLAN_H
#define ZNN_FFT_PLAN_H

#include "common.h"

typedef struct znn_fft_plan znn_fft_plan;

/* Number of complex values of the half spectrum of n: Z*Y*(X/2+1). */
static inline int64_t znn_fft_spectrum_size(const int64_t *n)
{
    return n[0] * n[1] * (n[2] / 2 + 1);
}

/* Get an idle plan for `howmany` transforms of shape n in precision real_size (4 or 8)
 * computed with `nthreads` threads (>= 1).  *plan is NULL on failure. */
int znn_fft_plan_acquire(const int64_t n[3], int real_size, int64_t howmany, int nthreads,
                         znn_fft_plan **plan);
/* Give the plan back to the cache (NULL is ignored). */
void znn_fft_plan_release(znn_fft_plan *plan);

/* Forward real -> complex of all `howmany` volumes: in (howmany*N reals), out (howmany*S
 * complex).  `in` is not modified. */
int znn_fft_plan_r2c(znn_fft_plan *plan, const void *in, void *out);
/* Backward complex -> real: in (howmany*S complex, Hermitian half spectra), out (howmany*N
 * reals).  `in` is not modified. */
int znn_fft_plan_c2r(znn_fft_plan *plan, const void *in, void *out);

/* Free every cached plan that is not in use; returns how many were freed. */
int znn_fft_plan_cache_clear(void);
/* Number of plans currently cached (busy or idle). */
int znn_fft_plan_cache_size(void);

/* "mkl-dfti" or "mkl-fftw3". */
const char *znn_fft_backend(void);

/* How rfft/irfft thread a batch of B maps with T threads (process-wide; for measurements):
 * 1 = one single-threaded transform per map, maps in parallel; 2 = one batched transform
 * (DFTI_NUMBER_OF_TRANSFORMS) threaded by MKL; 0 = automatic (default): the first
 * B - B % T maps as 1, the remaining B % T (all of them when B < T) as 2.
 * Returns the previous value. */
int znn_fft_set_strategy(int strategy);
int znn_fft_get_strategy(void);

#endif
