"""Estimate the memory a network needs for one patch in each convolution mode."""
from __future__ import annotations

import os

import numpy as np

DIRECT_SCRATCH = 64 * 2**20  # the direct-convolution kernels bound their lowering buffers


def _spectrum_elems(shape):
    z, y, x = shape
    return z * y * (x // 2 + 1)


def estimate_bytes(net, mode=None, *, training=True, cache_ffts=True):
    """Peak bytes for one forward (+ backward when training) pass.

    mode: 'fft' or 'direct' for every conv layer, or None for each layer's current mode.

    Counts feature maps (kept for the backward pass when training, freed as soon as consumed
    otherwise), their gradients, node spectra, frequency-domain buckets, cached kernel
    spectra and the direct kernels' scratch space.  An estimate: within ~20% of the peak.
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
        total += DIRECT_SCRATCH
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
