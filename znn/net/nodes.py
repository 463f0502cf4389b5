"""Node groups: input, sum, transfer (bias + transfer function) and maxout."""
from __future__ import annotations

import numpy as np

from znn import kernels as K
from znn.net.initializers import initialize


class Node:
    """A group of `n` feature maps of size `size` and its per-pass state."""

    def __init__(self, spec, size, sparsity, net):
        self.spec, self.name, self.type, self.n = spec, spec.name, spec.type, spec.size
        self.size, self.sparsity, self.net = tuple(size), tuple(sparsity), net
        self.in_edges, self.out_edges = [], []
        self.needs_grad = self.type != "input"
        self.bias = self.bias_grad = None
        if self.type == "transfer":
            self.function = K.FUNCTIONS[spec.function]
            args = tuple(spec.function_args) + (1.0, 0.0)
            self.a, self.b = float(args[0]), float(args[1])
            if spec.function == "tanh" and len(spec.function_args) < 2:
                self.b = 1.0
            if spec.init:
                self.bias = initialize(spec.init, spec.init_args, (self.n,), 1, 1, net.rng,
                                       net.dtype, (net.spec.path, spec.line))
            else:
                self.bias = np.zeros(self.n, net.dtype)
            self.bias_grad = np.zeros_like(self.bias)
        self.release()

    @property
    def shape(self):
        return (self.n,) + self.size

    def release(self):
        """Drop per-pass state (maps, spectra, gradients)."""
        self.value = None      # output maps (n, *size)
        self.spectrum = {}     # FFT size -> spectra of value, shared by outgoing FFT edges
        self.grad = None       # dE/d(output), accumulated from the outgoing edges
        self.dx_spectra = {}   # FFT size -> (summed input-gradient spectra, an edge of that size)
        self.argidx = None     # maxout: index of the winning incoming edge

    # -- forward ------------------------------------------------------------------------------
    def finish_forward(self, total, contributions):
        """Turn the summed input (or the maxout contributions) into this node's output."""
        if self.type == "maxout":
            total, self.argidx = K.maxout_forward(contributions, nthreads=self.net.num_threads)
        elif self.type == "transfer":
            K.transfer_forward(total, self.bias, self.function, self.a, self.b,
                               nthreads=self.net.num_threads)
        self.value = total
        return total

    def output_spectrum(self, edge):
        """Spectra of this node's maps at the FFT size of an outgoing FFT edge (computed once
        per size and shared by every outgoing edge of that size)."""
        shape = edge.fft_shape
        if shape not in self.spectrum:
            self.spectrum[shape] = edge.input_spectrum(self.value)
        return self.spectrum[shape]

    # -- backward -----------------------------------------------------------------------------
    def add_grad(self, g):
        """Accumulate dE/d(output) from one outgoing edge; takes over g (a fresh array)."""
        if g is None:
            return
        if self.grad is None:
            self.grad = g
        else:
            np.add(self.grad, g, out=self.grad)

    def collect_grad(self):
        """Finish dE/d(output): inverse-transform the spectral buckets of outgoing FFT edges."""
        for dxf, edge in self.dx_spectra.values():
            self.grad = edge.input_grad_from_spectrum(dxf, out=self.grad,
                                                      accumulate=self.grad is not None)
        self.dx_spectra = {}
        if self.grad is None:
            self.grad = np.zeros(self.shape, self.net.dtype)
        return self.grad

    def backward_through(self):
        """dE/d(pre-activation) from dE/d(output), in place; computes the bias gradient."""
        g = self.collect_grad()
        if self.type == "transfer":
            self.bias_grad[...] = K.transfer_backward_sum(g, self.value, self.function, self.a,
                                                          self.b, nthreads=self.net.num_threads)
        return g

    def grads_for_edges(self, g):
        """Gradient each incoming edge receives (maxout splits it by the winning edge)."""
        if self.type != "maxout":
            return [g] * len(self.in_edges)
        return K.maxout_backward(g, self.argidx, len(self.in_edges))
