"""The documented Python API over the compiled kernels: the only module that imports znn._core.

Every function takes C-contiguous float32 or float64 arrays shaped (C, Z, Y, X) (or
(n_in, n_out, kz, ky, kx) for filters), validates them, and runs the C kernel with the GIL
released on `nthreads` OpenMP threads (0 or less: every core).  See each module for details:

- FFT convolution (MKL DFTI): rfft, irfft, kernel_spectra, mac_forward, mac_backward,
  mac_forward_streamed, mac_backward_streamed, weight_grad, CACHE_FFTS, fft_backend
- FFT convolution, z-factored (complex GEMMs per frequency column, partial spectra cache):
  kernel_spectra_yx, zmac_forward, zmac_backward, weight_grad_z, release_zgemm_scratch
- FFT convolution, blocked (overlap-save blocks sharing one block size's kernel spectra): bmac,
  kernel_spectra_fm, blocks_gather, blocks_scatter
- direct convolution (MKL GEMM, or Winograd tiles with winograd=6|8): conv_forward,
  conv_backward_data, conv_backward_weight, winograd_fits, winograd_scratch_bytes,
  WINOGRAD_POINTS
- pooling: max_filter_forward/backward, max_filter_values, max_filter_backward_recompute
  (no stored arg-max; max_filter_recomputes), max_pool_forward/backward
- pointwise: transfer_forward/backward, transfer_backward_sum, channel_sum,
  dropout_forward/backward, maxout_forward/backward, FUNCTIONS (transfer-function name -> code)
- build: build_flags, default_dtype, simd_clone (the per-ISA clone of the hot loops in use),
  retain_freed_memory
"""
from znn._core import _build
from znn._core._blocks import blocks_gather, blocks_scatter
from znn._core._direct import (WINOGRAD_POINTS, conv_backward_data, conv_backward_weight,
                               conv_forward, winograd_fits, winograd_scratch_bytes)
from znn._core._fft import (CACHE_FFTS, bmac, irfft, kernel_spectra, kernel_spectra_fm,
                            kernel_spectra_yx, mac_backward, mac_backward_streamed, mac_forward,
                            mac_forward_streamed, release_zgemm_scratch, rfft, weight_grad,
                            weight_grad_z, zmac_backward, zmac_forward)
from znn._core._fft import backend as fft_backend
from znn._core._pointwise import (FUNCTIONS, channel_sum, dropout_backward, dropout_forward,
                                  maxout_backward, maxout_forward, transfer_backward,
                                  transfer_backward_sum, transfer_forward)
from znn._core._pool import (max_filter_backward, max_filter_backward_recompute,
                             max_filter_forward, max_filter_recomputes, max_filter_values,
                             max_pool_backward, max_pool_forward)

build_flags = _build.build_flags
default_dtype = _build.default_dtype
retain_freed_memory = _build.retain_freed_memory
simd_clone = _build.simd_clone

__all__ = [
    "CACHE_FFTS", "FUNCTIONS", "WINOGRAD_POINTS", "blocks_gather", "blocks_scatter", "bmac",
    "build_flags", "channel_sum", "conv_backward_data", "conv_backward_weight", "conv_forward",
    "default_dtype",
    "dropout_backward", "dropout_forward", "fft_backend", "irfft", "kernel_spectra",
    "kernel_spectra_fm", "kernel_spectra_yx", "mac_backward", "mac_backward_streamed",
    "mac_forward", "mac_forward_streamed", "max_filter_backward",
    "max_filter_backward_recompute", "max_filter_forward", "max_filter_recomputes",
    "max_filter_values", "max_pool_backward", "max_pool_forward", "maxout_backward",
    "maxout_forward", "release_zgemm_scratch", "retain_freed_memory", "rfft", "simd_clone",
    "transfer_backward",
    "transfer_backward_sum", "transfer_forward", "weight_grad", "weight_grad_z", "winograd_fits",
    "winograd_scratch_bytes", "zmac_backward", "zmac_forward",
]
