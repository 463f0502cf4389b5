"""Edge groups of a network: each type's forward and backward pass side by side.

An edge maps its input node group's maps (n_in, *in_size) to a contribution to its output
node group (n_out, *out_size).  `forward` returns a new array the caller may take over;
`backward(g)` receives dE/d(contribution) and returns dE/d(input) (or None when the input
needs no gradient), storing parameter gradients on the edge.
"""
from __future__ import annotations

import os

import numpy as np

from znn import kernels as K
from znn.net import blocked
from znn.net.initializers import initialize, tie_blocks
from znn.net.shapes import fast_fft_shape

COMPACT_ABOVE = 2**30  # bytes of full z-factored kernel spectra (see Conv.compact)


class Edge:
    """Base: geometry and bookkeeping shared by every edge type."""

    has_params = False
    is_fft = False

    def __init__(self, spec, src, dst, dilation, net):
        self.spec, self.name, self.type = spec, spec.name, spec.type
        self.src, self.dst, self.net = src, dst, net
        self.dilation = tuple(dilation)

    @property
    def threads(self):
        return self.net.num_threads

    def release(self):
        """Drop per-pass state."""


class Identity(Edge):
    """`dummy` (copy) and `maxout` edges (the maxout node takes the element-wise max)."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g.copy()


class Crop(Edge):
    """Removes `offset` voxels on both sides of each axis; backward zero-pads."""

    def _window(self, shape):
        return (slice(None),) + tuple(slice(o, s - o) for o, s in zip(self.spec.offset, shape))

    def forward(self, x):
        return np.ascontiguousarray(x[self._window(x.shape[1:])])

    def backward(self, g):
        dx = np.zeros((g.shape[0],) + tuple(self.src.size), g.dtype)
        dx[self._window(self.src.size)] = g
        return dx


class Dropout(Edge):
    """Inverted dropout with keep probability `ratio` in the train phase, identity in test."""

    def forward(self, x):
        self._mask = None
        if self.net.phase != "train":
            return x.copy()
        seed = int(self.net.rng.integers(0, 2**63 - 1))
        y, self._mask = K.dropout_forward(x, self.spec.ratio, seed, nthreads=self.threads)
        return y

    def backward(self, g):
        if self._mask is None:
            return g.copy()
        return K.dropout_backward(g, self._mask, self.spec.ratio)

    def release(self):
        self._mask = None


class MaxFilter(Edge):
    """Dense sliding max over `size` taps spaced by the input sparsity.

    Training keeps no arg-max for windows of up to 8 taps (K.max_filter_recomputes): the
    backward pass finds each window's maximum again in the input, which the source node keeps
    anyway.  That saves an int64 volume per output voxel and, for 1x2x2 windows, time (N4's
    48-map filters on 292x292: 12.8 -> 10.4 ms forward + backward on one core; 2x2x2 windows
    on 40^3: 10.1 -> 12.4 ms).  Larger windows store the arg-max."""

    def forward(self, x):
        self._argmax = self._x = None
        if self.net.keeping_state and not K.max_filter_recomputes(self.spec.size):
            y, self._argmax = K.max_filter_forward(x, self.spec.size, self.dilation,
                                                   nthreads=self.threads)
            return y
        if self.net.keeping_state:  # the backward pass finds the maxima again in x
            self._x = x
        return K.max_filter_values(x, self.spec.size, self.dilation, nthreads=self.threads)

    def backward(self, g):
        if self._x is not None:
            return K.max_filter_backward_recompute(self._x, g, self.spec.size, self.dilation,
                                                   nthreads=self.threads)
        return K.max_filter_backward(g, self._argmax, self.src.shape, nthreads=self.threads)

    def release(self):
        self._argmax = self._x = None


class MaxPool(Edge):
    """Non-overlapping max pooling (strided, non-dense output)."""

    def forward(self, x):
        y, self._argmax = K.max_pool_forward(x, self.spec.size, nthreads=self.threads)
        return y

    def backward(self, g):
        return K.max_pool_backward(g, self._argmax, self.src.shape, nthreads=self.threads)

    def release(self):
        self._argmax = None


class Conv(Edge):
    """Fully connected valid true convolution, dilated by the input sparsity.

    Filters are (n_in, n_out, kz, ky, kx).  In FFT mode the edge works on spectra that the
    graph shares between edges (see znn.net.graph) and multiplies them with z-factored
    kernel spectra, one complex GEMM per frequency column; those are kept between passes
    and recomputed only when the filters change, unless the kernels were built with
    ZNN_DONT_CACHE_FFTS, in which case they are recomputed at every use and never kept.
    """

    has_params = True

    def __init__(self, spec, src, dst, dilation, net):
        super().__init__(spec, src, dst, dilation, net)
        self.ksize = tuple(spec.size)
        shape = (src.n, dst.n) + self.ksize
        kvol = int(np.prod(self.ksize))
        if spec.init is None:
            self.filters = np.zeros(shape, net.dtype)
            self.initialized = False
        else:
            self.filters = initialize(spec.init, spec.init_args, shape, src.n * kvol,
                                      dst.n * kvol, net.rng, net.dtype, (net.spec.path, spec.line))
            self.initialized = True
        self.tie()
        self.grad = np.zeros_like(self.filters)
        self.mode = "direct"
        self.file_fft = bool(spec.fft)  # the `fft` flag of the .znn file, or of a loaded .h5
        self._held = {}  # engine -> (layout key, filters, kernel spectra): see _cached
        self.fft_engine = None  # forward-only FFT engine: 'blocked', 'whole' or None (model)
        self.winograd = 0  # direct mode: 0 = GEMM lowering, 6 or 8 = Winograd tile points
        # the backward passes' own choices (None: as `winograd`): on small patches the fastest
        # method of a layer can differ between its passes
        self.winograd_data = self.winograd_weight = None

    @property
    def is_fft(self):
        return self.mode == "fft"

    def tie(self):
        tie_blocks(self.filters, self.spec.repeat)

    # -- direct (GEMM lowering, or Winograd tiles when `winograd` is 6 or 8; see pass_points) ---
    def forward(self, x):
        self._x = x
        return K.conv_forward(x, self.filters, self.dilation, nthreads=self.threads,
                              winograd=self.winograd)

    def pass_points(self, p):
        """Winograd points of pass p (0 forward, 1 backward data, 2 weight gradient), 0 for
        the GEMM lowering."""
        own = (None, self.winograd_data, self.winograd_weight)[p]
        return self.winograd if own is None else own

    def backward(self, g):
        self.backward_weight(g)
        return self.backward_data(g) if self.src.needs_grad else None

    def backward_weight(self, g):
        K.conv_backward_weight(self._x, g, self.dilation, out=self.grad, nthreads=self.threads,
                               winograd=self.pass_points(2))

    def backward_data(self, g):
        return K.conv_backward_data(g, self.filters, self.dilation, tuple(self.src.size),
                                    nthreads=self.threads, winograd=self.pass_points(1))

    # -- FFT ------------------------------------------------------------------------------------
    @property
    def fft_shape(self):
        """FFT volume of this edge: the input map size padded to fast DFT lengths
        (see fft_offset for the windows; ZNN_FFT_EXACT_SIZES=1 turns the padding off)."""
        if os.environ.get("ZNN_FFT_EXACT_SIZES", "") not in ("", "0"):
            return tuple(self.src.size)
        return fast_fft_shape(self.src.size)

    @property
    def fft_offset(self):
        """Where the output (and its gradient) sits in the FFT volume: (k - 1) * dilation."""
        return tuple(a - b for a, b in zip(self.src.size, self.dst.size))

    @property
    def fft_key(self):
        """Edges with equal keys share frequency-domain sums (one inverse transform)."""
        return self.fft_shape + self.fft_offset

    def _scale(self):
        return 1.0 / float(np.prod(self.fft_shape))

    def input_spectrum(self, x):
        """Spectra of the input maps x (n_in, *src.size) at the FFT size."""
        return K.rfft(x, self.fft_shape, nthreads=self.threads)

    def output_from_spectrum(self, yf, out=None, accumulate=False):
        """The output window of the inverse transform of yf (n_out spectra)."""
        return K.irfft(yf, self.fft_shape, self.fft_offset, self.dst.size, out=out,
                       scale=self._scale(), accumulate=accumulate, nthreads=self.threads)

    def grad_spectrum(self, g):
        """Spectra of the output gradient g (n_out, *dst.size), placed at fft_offset."""
        return K.rfft(np.ascontiguousarray(g), self.fft_shape, self.fft_offset,
                      nthreads=self.threads)

    def input_grad_from_spectrum(self, dxf, out=None, accumulate=False):
        """dE/d(input) (n_in, *src.size) from its spectra."""
        return K.irfft(dxf, self.fft_shape, (0, 0, 0), self.src.size, out=out,
                       scale=self._scale(), accumulate=accumulate, nthreads=self.threads)

    def _yx_shape(self, compact=None):
        """(columns, rows, n_out) of the z-factored kernel spectra (see kernel_spectra)."""
        z, y, x = self.fft_shape
        kz, ky, _ = self.ksize
        if z == 1:  # planes: the kernels' y axis plays the part of z
            return (x // 2 + 1, ky * self.src.n, self.dst.n)
        compact = self.compact if compact is None else compact
        return ((ky if compact else y) * (x // 2 + 1), kz * self.src.n, self.dst.n)

    @property
    def compact(self):
        """Keep only the x stage of the kernel spectra (ky/Y of the memory) and let the
        multiply-accumulates apply the y stage per block of columns, in cache.  That stage
        costs ~40% more per pass (net3d_7 forward 16x96x96, 1 thread: 2.1 s full, 3.0 s
        compact), so it is used only when the full spectra would exceed COMPACT_ABOVE bytes.
        ZNN_FFT_COMPACT=0/1 forces the choice."""
        force = os.environ.get("ZNN_FFT_COMPACT", "")
        if force in ("0", "1"):
            return force == "1"
        full = int(np.prod(self._yx_shape(False))) * 2 * np.dtype(self.net.dtype).itemsize
        return full > COMPACT_ABOVE

    def kernel_spectra(self):
        """(spectra, compact): the z-factored spectra of the dilated, zero-padded filters
        (transformed along y and x only, or x only when compact; one matrix per frequency
        column, see znn/_core/src/fft_zgemm.h).  Cached while the filters and the layout are
        unchanged, unless built with ZNN_DONT_CACHE_FFTS (then recomputed at every use,
        ~kz/Z of a full spectrum's work, and never kept)."""
        compact = self.compact
        return self._cached("whole", (compact, self.fft_shape), lambda: K.kernel_spectra_yx(
            self.filters, self.dilation, self.fft_shape, nthreads=self.threads,
            compact=compact)), compact

    def _cached(self, engine, key, make):
        """make()'s kernel spectra, kept for `engine` while the layout `key` and the filters
        are unchanged; with ZNN_DONT_CACHE_FFTS builds made at every use and never kept."""
        if not K.CACHE_FFTS:
            return make()
        held = self._held.get(engine)
        if held is None or held[0] != key or not np.array_equal(held[1], self.filters):
            self._held.pop(engine, None)  # free the old spectra before making new ones
            held = self._held[engine] = (key, self.filters.copy(), make())
        return held[2]

    @property
    def _wf(self):
        """The whole-map engine's cached kernel spectra (None when there are none)."""
        return self._held.get("whole", (None,) * 3)[2]

    @property
    def _bwf(self):
        """The blocked engine's cached kernel spectra (None when there are none)."""
        return self._held.get("blocked", (None,) * 3)[2]

    def invalidate_spectra(self):
        """Forget the cached kernel spectra (as a parameter update does)."""
        self._held.clear()

    # -- FFT, blocked (forward-only passes; znn/net/blocked.py) ---------------------------------
    @property
    def block_plan(self):
        """The overlap-save block plan this edge's forward-only FFT passes use, or None for
        the whole-map engine: as `fft_engine` says (set from a timed conv plan), else as the
        cost model rates them.  ZNN_FFT_BLOCKED=0/1 forces the choice."""
        engine = {"0": "whole", "1": "blocked"}.get(os.environ.get("ZNN_FFT_BLOCKED", ""),
                                                     self.fft_engine)
        if engine == "whole":
            return None
        plan = self.cheapest_blocks()
        if plan is None or engine == "blocked":
            return plan
        whole = blocked.whole_map_seconds(self.fft_shape, tuple(self.dst.size), self.ksize,
                                          self.src.n, self.dst.n, self.compact)
        return plan if plan.seconds < whole else None

    def cheapest_blocks(self):
        """The block plan the cost model rates cheapest for this layer (None: none fits)."""
        return blocked.plan_blocks(tuple(self.dst.size), self.ksize, tuple(self.dilation),
                                   self.src.n, self.dst.n, np.dtype(self.net.dtype).itemsize)

    @property
    def blocked_possible(self):
        """Whether forward-only passes can run blocked (a block size fits the caps)."""
        return (os.environ.get("ZNN_FFT_BLOCKED", "") != "0"
                and self.cheapest_blocks() is not None)

    def forward_blocked(self, x, plan):
        """This layer's output of x by the blocked engine (kernel spectra cached as in
        kernel_spectra, per block size)."""
        wt = self._cached("blocked", plan.fft,
                          lambda: blocked.block_spectra(self.filters, plan, self.threads))
        return blocked.forward(x, wt, plan, self.threads)

    def forward_fft(self, x):
        """A forward-only FFT pass of this edge alone on real maps (as in inference)."""
        plan = self.block_plan
        if plan is not None:
            return self.forward_blocked(x, plan)
        return self.output_from_spectrum(self.forward_spectral(self.input_spectrum(x), None))

    def spectra_bytes(self, training=True):
        """Bytes of the kernel spectra one FFT pass of this edge holds (kept between passes
        unless built with ZNN_DONT_CACHE_FFTS); training=False: of a forward-only pass, which
        may use the blocked engine (its spectra and one batch of blocks)."""
        real = np.dtype(self.net.dtype).itemsize
        plan = None if training else self.block_plan
        if plan is not None:
            return plan.spectra_bytes(real) + plan.batch_bytes(real)
        return int(np.prod(self._yx_shape())) * 2 * real

    def _spectra(self, n):
        z, y, x = self.fft_shape
        ctype = np.complex64 if self.net.dtype == np.float32 else np.complex128
        return np.empty((n, z, y, x // 2 + 1), ctype)

    def forward_spectral(self, xf, yf):
        """yf (n_out spectra, or None: new) += sum_i xf[i] * W_f[i, j]; returns yf."""
        first = yf is None
        if first:
            yf = self._spectra(self.dst.n)
        wf, compact = self.kernel_spectra()
        K.zmac_forward(xf, wf, self.ksize, self.dilation, self.fft_shape, yf,
                       accumulate=not first, nthreads=self.threads, compact=compact)
        return yf

    def backward_spectral(self, xf, gf, dxf):
        """Weight gradient from the input and gradient spectra; dxf (or None) += input grad."""
        K.weight_grad_z(xf, gf, self.fft_shape, self.ksize, self.dilation, out=self.grad,
                        nthreads=self.threads)
        if not self.src.needs_grad:
            return dxf
        first = dxf is None
        if first:
            dxf = self._spectra(self.src.n)
        wf, compact = self.kernel_spectra()
        K.zmac_backward(gf, wf, self.ksize, self.dilation, self.fft_shape, dxf,
                        accumulate=not first, nthreads=self.threads, compact=compact)
        return dxf

    def release(self):
        self._x = None
        if not self.net.keep_kernel_spectra:
            self.invalidate_spectra()


TYPES = {
    "conv": Conv,
    "max_filter": MaxFilter,
    "max_pool": MaxPool,
    "dropout": Dropout,
    "crop": Crop,
    "dummy": Identity,
    "maxout": Identity,
}
