/* Shared runtime for znn's C kernels: status codes, error text, aligned memory, threads.
 *
 * Conventions for every kernel in znn/_core/src:
 *  - functions return a znn_status (0 = ZNN_OK); on failure they call znn_fail() with a
 *    message, which the Cython layer turns into znn.errors.KernelError;
 *  - arrays are raw C-contiguous pointers owned by the caller unless stated otherwise;
 *  - shapes are (z, y, x) with x fastest; a "map set" is (C, Z, Y, X);
 *  - `nthreads` <= 0 means every core; results never depend on the thread count
 *    beyond float rounding (each output element is reduced by one thread in a fixed order);
 *  - no kernel touches Python: the caller releases the GIL.
 *  - errors raised inside an OpenMP region are recorded with znn_fail() from any thread;
 *    the message is stored per process (first error wins) and returned by the caller.
 */
#ifndef ZNN_COMMON_H
#define ZNN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifndef ZNN_USE_FLOATS
#define ZNN_USE_FLOATS 1
#endif
#ifndef ZNN_USE_MKL_NATIVE_FFT
#define ZNN_USE_MKL_NATIVE_FFT 1
#endif
#ifndef ZNN_USE_MKL_FFT
#define ZNN_USE_MKL_FFT 0
#endif
#ifndef ZNN_USE_MKL_DIRECT_CONV
#define ZNN_USE_MKL_DIRECT_CONV 1
#endif
#ifndef ZNN_DONT_CACHE_FFTS
#define ZNN_DONT_CACHE_FFTS 0
#endif
#ifndef ZNN_XEON_PHI
#define ZNN_XEON_PHI 0
#endif

/* Alignment of every buffer znn allocates itself (ZNN_XEON_PHI: 64-byte, as the original). */
#if ZNN_XEON_PHI
#define ZNN_ALIGNMENT 64
#else
#define ZNN_ALIGNMENT 16
#endif

typedef enum {
    ZNN_OK = 0,
    ZNN_ERR_ARG = 1,      /* bad shape / argument (caller bug) */
    ZNN_ERR_NOMEM = 2,    /* allocation failed */
    ZNN_ERR_MKL = 3,      /* MKL returned an error; message holds MKL's text */
    ZNN_ERR_INTERNAL = 4
} znn_status;

/* Record an error (printf-style) and return `code`.  Thread-safe; first error wins until
 * znn_clear_error().  */
int znn_fail(int code, const char *fmt, ...);
/* The recorded message ("" when none) and reset. */
const char *znn_error_message(void);
void znn_clear_error(void);

/* Aligned allocation (ZNN_ALIGNMENT bytes); znn_calloc zero-fills.  NULL on failure. */
void *znn_malloc(size_t bytes);
void *znn_calloc(size_t bytes);
void znn_free(void *p);

/* Called once at import: keeps one OpenMP runtime in the process (MKL on GNU OpenMP). */
int znn_runtime_init(void);
/* Keep freed heap memory in the process (glibc: no mmap for large blocks, no trimming), so
 * that the next pass reuses pages that are already mapped instead of faulting in fresh
 * zeroed ones (measured: N4 inference 512x512 tiles 0.79-1.28 s -> 0.63-0.65 s per tile).
 * Process-wide; the command-line tool turns it on, library users may.  Returns 1 when it
 * took effect, 0 where it is not supported. */
int znn_retain_freed_memory(void);
/* nthreads <= 0 -> number of cores. */
int znn_threads(int nthreads);

/* Compiled-in build flags, as "ZNN_USE_FLOATS=1 ..." */
const char *znn_build_flags(void);
/* Default real size in bytes (4 with ZNN_USE_FLOATS, else 8). */
int znn_default_real_size(void);
int znn_alignment(void);

/* Hot loops are compiled for AVX-512, AVX2+FMA and the baseline and picked once at load
 * time, as the build does not assume -march=native.  The clones are chosen by CPU features
 * (x86-64-v3 = AVX2, FMA, BMI, F16C...): an `arch=haswell` clone would be chosen only on
 * CPUs that identify as Intel Haswell, so AMD CPUs with AVX2 ran the baseline clone. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ZNN_HAVE_CLONES 1
#if __GNUC__ >= 12
#define ZNN_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define ZNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define ZNN_HAVE_CLONES 0
#define ZNN_CLONES
#endif
/* Which clone of ZNN_CLONES functions this CPU runs: 2 = AVX-512, 1 = AVX2 (+FMA from
 * GCC 12), 0 = baseline, -1 = no clones in this build. */
int znn_simd_clone(void);

/* 3-vector helpers */
static inline int64_t znn_vol3(const int64_t *s) { return s[0] * s[1] * s[2]; }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

#endif
