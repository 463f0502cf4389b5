"""Estimate the memory a network needs for one patch in each convolution mode."""
from __future__ import annotations

import os

import numpy as np

DIRECT_SCRATCH = 64 * 2**20  # the direct-convolution kernels bound their lowering buffers


def _spectrum_elems(shape):
    z, y, x = shape
    return z * y * (x // 2 + 1)


def winograd_bytes(edge, training):
    """Peak scratch of a direct edge's Winograd kernels over the passes it runs."""
    from znn.kernels import winograd_scratch_bytes

    passes = ("forward", "backward_data", "backward_weight") if training else ("forward",)
    return max([0] + [winograd_scratch_bytes(edge.src.n, edge.dst.n, edge.src.size,
                                             edge.ksize, edge.dilation, edge.pass_points(k),
                                             p, np.dtype(edge.net.dtype).itemsize,
                                             edge.threads)
                      for k, p in enumerate(passes) if edge.pass_points(k)])


def estimate_bytes(net, mode=None, *, training=True, cache_ffts=True):
    """Peak bytes for one forward (+ backward when training) pass.

    mode: 'fft' or 'direct' for every conv layer, or None for each layer's current mode.

    Counts feature maps (kept for the backward pass when training, freed as soon as consumed
    otherwise), their gradients, node spectra, frequency-domain buckets, cached kernel
    spectra and the direct kernels' scratch space (the larger of the GEMM lowering's bound and
    the Winograd kernels' tile scratch).  An estimate: within ~20% of the peak.
    """
    real = np.dtype(net.dtype).itemsize
    cplx = 2 * real
    maps = [n.n * int(np.prod(n.size)) * real for n in net.nodes.values()]
    total = sum(maps) if training else 2 * max(maps)
    if training:
        total += sum(maps)  # gradients
    convs = [e for e in net.conv_edges() if e.ksize != (1, 1, 1)]
    ffts = [e for e in convs if (mode or e.mode) == "fft"]
    if len(ffts) < len(convs):
        total += max([DIRECT_SCRATCH] + [winograd_bytes(e, training) for e in convs
                                         if e not in ffts])
    if not training:  # forward-only passes may run layers blocked: own spectra, no buckets
        runs_blocked = {e.name: e.block_plan is not None for e in ffts}
        kernels = [e.spectra_bytes(training=False) for e in ffts if runs_blocked[e.name]]
        if kernels:
            total += sum(kernels) if cache_ffts else max(kernels)
        ffts = [e for e in ffts if not runs_blocked[e.name]]
    convs = ffts
    if convs:
        spectra = [e.src.n * _spectrum_elems(e.fft_shape) * cplx
                   for e in {e.src.name: e for e in convs}.values()]
        total += sum(spectra) if training else max(spectra)
        buckets = [e.dst.n * _spectrum_elems(e.fft_shape) * cplx for e in convs]
        total += max(buckets) * (2 if training else 1)
        kernels = [e.spectra_bytes() for e in convs]
        total += sum(kernels) if cache_ffts else max(kernels)
        if training:  # the weight gradient's scratch (transposed spectra + its y stage)
            total += max(((e.src.n + e.dst.n) * _spectrum_elems(e.fft_shape)
                          + (e.fft_shape[2] // 2 + 1) * e.src.n * e.dst.n * e.ksize[0]
                          * e.ksize[1]) * cplx for e in convs)
    return int(total)


def net_threads(net):
    return net.num_threads if net.num_threads > 0 else (os.cpu_count() or 1)


def human(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024.0
    return str(nbytes)
