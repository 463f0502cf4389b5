/* Spectral multiply-accumulate of a layer's edges: yf[j] += xf[i]*wf[i,j] and its adjoint. */
#include "fft_kernels.h"

#include <omp.h>
#include <string.h>

#define ZNN_FFT_CAT2(a, b) a##b
#define ZNN_FFT_CAT(a, b) ZNN_FFT_CAT2(a, b)

/* The multiply-accumulate loops are compiled for AVX-512, AVX2 and the baseline, picked at
 * load time (the build does not assume -march=native).  -std=c11 keeps -ffp-contract=off,
 * so every variant rounds identically. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ZNN_FFT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ZNN_FFT_CLONES
#endif

#define REAL float
#define SFX _s
#define RSIZE 4
#include "fft_mac.inc"
#undef REAL
#undef SFX
#undef RSIZE

#define REAL double
#define SFX _d
#define RSIZE 8
#include "fft_mac.inc"
#undef REAL
#undef SFX
#undef RSIZE
