/* Spectral multiply-accumulate of a layer's edges: yf[j] += xf[i]*wf[i,j] and its adjoint. */
#include "fft_kernels.h"

#include <omp.h>
#include <string.h>

#define ZNN_FFT_CAT2(a, b) a##b
#define ZNN_FFT_CAT(a, b) ZNN_FFT_CAT2(a, b)

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
