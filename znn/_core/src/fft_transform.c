/* FFT transforms of map sets: padded rfft, cropped irfft, kernel spectra, weight gradient. */
#include "fft_kernels.h"

#include <math.h>
#include <string.h>

/* Complex values per chunk of a plane in the direct (tap-wise) transforms. */
#define ZNN_FFT_CHUNK 256

double *znn_fft_twiddles(const int64_t n[3])
{
    double *tw = znn_malloc((size_t)(2 * (n[0] + n[1] + n[2])) * sizeof(double));
    if (!tw) return NULL;
    double *t = tw;
    for (int a = 0; a < 3; a++)
        for (int64_t m = 0; m < n[a]; m++, t += 2) {
            double th = -6.283185307179586476925 * (double)m / (double)n[a];
            t[0] = cos(th);
            t[1] = sin(th);
        }
    return tw;
}

int64_t znn_fft_kernel_work(const int64_t k[3], const int64_t n[3])
{
    const int64_t Xh = n[2] / 2 + 1;
    return 2 * k[0] * Xh * (k[1] + n[1]) + 2 * ZNN_FFT_CHUNK;
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
