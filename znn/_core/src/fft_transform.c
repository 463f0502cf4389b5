/* FFT transforms of map sets: padded rfft, cropped irfft, kernel spectra, weight gradient. */
#include "fft_kernels.h"

#include <math.h>
#include <string.h>

int64_t znn_fft_kernel_work(const int64_t k[3], const int64_t n[3])
{
    const int64_t Xh = n[2] / 2 + 1;
    return 2 * k[0] * Xh * (k[1] + n[1]);
}

#define ZNN_FFT_CAT2(a, b) a##b
#define ZNN_FFT_CAT(a, b) ZNN_FFT_CAT2(a, b)

#define REAL float
#define SFX _s
#define RSIZE 4
#include "fft_transform.inc"
#undef REAL
#undef SFX
#undef RSIZE

#define REAL double
#define SFX _d
#define RSIZE 8
#include "fft_transform.inc"
#undef REAL
#undef SFX
#undef RSIZE
