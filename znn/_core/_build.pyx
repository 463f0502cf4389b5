"""What this build of znn was compiled with (flags, default dtype, alignment)."""
from znn._core._common cimport (znn_build_flags, znn_default_real_size, znn_alignment, znn_simd_clone,
                                znn_runtime_init, znn_threads, znn_retain_freed_memory, znn_malloc, znn_free, check)
from libc.stdint cimport uintptr_t

check(znn_runtime_init())


def build_flags():
    """Dict of the build flags compiled into the C kernels, name -> bool."""
    text = znn_build_flags().decode()
    return {k: v == "1" for k, v in (item.split("=") for item in text.split())}


def default_dtype():
    """numpy dtype name selected by ZNN_USE_FLOATS at build time."""
    return "float32" if znn_default_real_size() == 4 else "float64"


def simd_clone():
    """Which per-ISA clone of the hot loops this CPU runs: 'avx512', 'avx2', 'baseline', or
    'none' (a build without clones, e.g. not GCC on x86-64)."""
    return {2: "avx512", 1: "avx2", 0: "baseline"}.get(znn_simd_clone(), "none")


def alignment():
    """Byte alignment of the buffers the kernels allocate (64 with ZNN_XEON_PHI)."""
    return znn_alignment()


def probe_alignment(int count=16):
    """Allocate `count` buffers through the kernels' allocator; return their addresses mod 64."""
    out = []
    cdef void *p
    for i in range(count):
        p = znn_malloc(1000 + 37 * i)
        out.append(<uintptr_t>p % 64)
        znn_free(p)
    return out


def cpu_threads(int n=0):
    """Thread count the kernels use for num_threads=n (n <= 0 means every core)."""
    return znn_threads(n)


def retain_freed_memory():
    """Keep freed memory in the process for reuse by later passes (glibc; process-wide).

    Avoids faulting in fresh pages for every tile or training step; resident memory then
    stays at its peak.  Returns True when it took effect.
    """
    return bool(znn_retain_freed_memory())
