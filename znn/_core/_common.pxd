# Declarations shared by every znn._core extension (src/common.h) and the status check.
from libc.stdint cimport int64_t

cdef extern from "common.h" nogil:
    int ZNN_OK
    int znn_runtime_init()
    int znn_threads(int nthreads)
    int znn_retain_freed_memory()
    const char *znn_error_message()
    void znn_clear_error()
    const char *znn_build_flags()
    int znn_default_real_size()
    int znn_alignment()
    int znn_simd_clone()
    void *znn_malloc(size_t nbytes)
    void znn_free(void *p)


cdef inline int check(int status) except -1:
    """Raise znn.errors.KernelError with the C message when status is not ZNN_OK."""
    if status == 0:
        return 0
    message = znn_error_message().decode("utf-8", "replace")
    znn_clear_error()
    from znn.errors import KernelError
    raise KernelError(message or f"kernel failed with status {status}", status)
