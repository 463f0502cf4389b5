/* Shared runtime: error recording, aligned allocation, thread setup, build flags. */
#include "common.h"

#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <mkl.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

static char g_message[1024];
static int g_has_error = 0;

int znn_fail(int code, const char *fmt, ...)
{
    #pragma omp critical(znn_error)
    {
        if (!g_has_error) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(g_message, sizeof g_message, fmt, ap);
            va_end(ap);
            g_has_error = 1;
        }
    }
    return code;
}

const char *znn_error_message(void) { return g_has_error ? g_message : ""; }

void znn_clear_error(void)
{
    #pragma omp critical(znn_error)
    {
        g_has_error = 0;
        g_message[0] = '\0';
    }
}

void *znn_malloc(size_t bytes)
{
    return mkl_malloc(bytes ? bytes : 1, ZNN_ALIGNMENT);
}

void *znn_calloc(size_t bytes)
{
    void *p = znn_malloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void znn_free(void *p)
{
    if (p) mkl_free(p);
}

int znn_runtime_init(void)
{
    static int done = 0;
    #pragma omp critical(znn_init)
    {
        if (!done) {
            /* Our kernels use gcc's OpenMP; MKL must use the same runtime (libgomp),
             * not Intel's libiomp5, or two thread pools fight over the cores. */
            mkl_set_threading_layer(MKL_THREADING_GNU);
            mkl_set_interface_layer(MKL_INTERFACE_LP64);
            done = 1;
        }
    }
    return ZNN_OK;
}

int znn_threads(int nthreads)
{
    if (nthreads > 0) return nthreads;
    int n = omp_get_num_procs();
    return n > 0 ? n : 1;
}

const char *znn_build_flags(void)
{
#define ZNN_STR2(x) #x
#define ZNN_STR(x) ZNN_STR2(x)
    return "ZNN_USE_FLOATS=" ZNN_STR(ZNN_USE_FLOATS)
           " ZNN_USE_MKL_NATIVE_FFT=" ZNN_STR(ZNN_USE_MKL_NATIVE_FFT)
           " ZNN_USE_MKL_FFT=" ZNN_STR(ZNN_USE_MKL_FFT)
           " ZNN_USE_MKL_DIRECT_CONV=" ZNN_STR(ZNN_USE_MKL_DIRECT_CONV)
           " ZNN_DONT_CACHE_FFTS=" ZNN_STR(ZNN_DONT_CACHE_FFTS)
           " ZNN_XEON_PHI=" ZNN_STR(ZNN_XEON_PHI);
}

#if ZNN_HAVE_CLONES
/* A function with a clone per ISA; its resolver (the function the dynamic linker calls to
 * bind the clones, named by GCC) says which clone this CPU gets. */
ZNN_CLONES static void clone_probe(float *a, int64_t n)
{
    for (int64_t i = 0; i < n; i++) a[i] = a[i] * a[i] + 1.0f;
}
#if __GNUC__ >= 12
#define ZNN_CLONE_V3 "clone_probe.arch_x86_64_v3"
#else
#define ZNN_CLONE_V3 "clone_probe.avx2"
#endif
extern void clone_probe_v4(float *, int64_t) __asm__("clone_probe.avx512f");
extern void clone_probe_v3(float *, int64_t) __asm__(ZNN_CLONE_V3);
extern void clone_probe_base(float *, int64_t) __asm__("clone_probe.default");
extern void *clone_probe_resolver(void) __asm__("clone_probe.resolver");

int znn_simd_clone(void)
{
    float a[16] = {0};
    clone_probe(a, 16);  /* referenced, so the clones and the resolver are emitted */
    const void *p = clone_probe_resolver();
    if (p == (const void *)clone_probe_v4) return 2;
    if (p == (const void *)clone_probe_v3) return 1;
    return p == (const void *)clone_probe_base ? 0 : -1;
}
#else
int znn_simd_clone(void) { return -1; }
#endif

int znn_default_real_size(void) { return ZNN_USE_FLOATS ? 4 : 8; }
int znn_alignment(void) { return ZNN_ALIGNMENT; }

int znn_retain_freed_memory(void)
{
#if defined(__GLIBC__)
    int ok = mallopt(M_MMAP_MAX, 0);
    ok = mallopt(M_TRIM_THRESHOLD, -1) && ok;  /* -1: SIZE_MAX, never trim the heap */
    return ok ? 1 : 0;
#else
    return 0;
#endif
}
