"""Choose FFT or direct convolution per conv layer by timing both on the layer's real shapes."""
from __future__ import annotations

import time

import numpy as np

from znn import kernels as K


def best_time(fn, repeats=2, warmup=1):
    """Best wall time of `repeats` calls of fn after `warmup` calls (plans, page faults)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_layer(edge, *, training=True, repeats=2, rng=None):
    """Seconds per pass of one conv edge in each mode: {'fft': s, 'direct': s}.

    training=True times forward + backward (data and weight gradients, and the kernel
    transforms that every update invalidates); False times the forward pass only, with the
    kernel spectra cached as they are during inference.
    """
    rng = rng or np.random.default_rng(0)
    dtype, nt = edge.net.dtype, edge.net.num_threads
    x = rng.standard_normal((edge.src.n,) + tuple(edge.src.size)).astype(dtype)
    g = rng.standard_normal((edge.dst.n,) + tuple(edge.dst.size)).astype(dtype)
    w = np.ascontiguousarray(edge.filters)
    d, n_shape, k = edge.dilation, tuple(edge.src.size), edge.ksize
    offset = tuple(a - b for a, b in zip(n_shape, edge.dst.size))
    scale = 1.0 / float(np.prod(n_shape))
    wf_cached = K.kernel_spectra(w, d, n_shape, nthreads=nt) if K.CACHE_FFTS else None

    def direct():
        K.conv_forward(x, w, d, nthreads=nt)
        if training:
            K.conv_backward_data(g, w, d, n_shape, nthreads=nt)
            K.conv_backward_weight(x, g, d, nthreads=nt)

    def mac(xf, fwd):
        out = np.empty(((edge.dst.n if fwd else edge.src.n),) + xf.shape[1:], xf.dtype)
        if K.CACHE_FFTS:
            wf = K.kernel_spectra(w, d, n_shape, nthreads=nt) if training else wf_cached
            (K.mac_forward if fwd else K.mac_backward)(xf, wf, out, nthreads=nt)
        else:
            fn = K.mac_forward_streamed if fwd else K.mac_backward_streamed
            fn(xf, w, d, n_shape, out, nthreads=nt)
        return out

    def fft():
        xf = K.rfft(x, n_shape, nthreads=nt)
        K.irfft(mac(xf, True), n_shape, offset, edge.dst.size, scale=scale, nthreads=nt)
        if training:
            gf = K.rfft(g, n_shape, offset, nthreads=nt)
            K.weight_grad(xf, gf, n_shape, k, d, nthreads=nt)
            K.irfft(mac(gf, False), n_shape, (0, 0, 0), n_shape, scale=scale, nthreads=nt)

    return {"fft": best_time(fft, repeats), "direct": best_time(direct, repeats)}


def optimize_network(net, *, training=None, repeats=2, budget=None):
    """Time every conv layer (not 1x1x1) and switch each to its faster mode.

    With a memory `budget` (bytes), FFT layers whose spectra would exceed it are switched
    back to direct, the costliest in memory first.  Returns {layer: {'fft': s,
    'direct': s, 'choice': mode}}.
    """
    from znn.kernels import CACHE_FFTS
    from znn.net.memory import estimate_bytes

    training = net.phase == "train" if training is None else training
    report, modes = {}, {}
    for e in net.conv_edges():
        if e.ksize == (1, 1, 1):
            continue
        times = time_layer(e, training=training, repeats=repeats)
        choice = min(times, key=times.get)
        report[e.name] = {**times, "choice": choice}
        modes[e.name] = choice
    net.set_conv_mode(modes)
    if budget is not None:
        by_memory = sorted((e for e in net.conv_edges() if e.mode == "fft"),
                           key=lambda e: e.src.n * e.dst.n * int(np.prod(e.src.size)))
        while by_memory and estimate_bytes(net, training=training,
                                           cache_ffts=CACHE_FFTS) > budget:
            e = by_memory.pop()
            e.mode = modes[e.name] = report[e.name]["choice"] = "direct"
            report[e.name]["memory"] = "fft over budget"
    return report
