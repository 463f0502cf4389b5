"""The Network: a .znn graph built for one output size, with forward, backward and parameters."""
from __future__ import annotations

import numpy as np

from znn import kernels as K
from znn.errors import NetworkError
from znn.net import shapes
from znn.net.edges import TYPES, Conv
from znn.net.nodes import Node

CONV_MODES = ("fft", "direct", "file")


class Network:
    """A dense convolutional network built from a NetworkSpec for a given output size.

    Use :func:`znn.load_network` to make one.  Arrays are (C, Z, Y, X) in ``dtype``.

    FFT memoisation (as in the original ZNN): each node's maps are transformed once and the
    spectrum is shared by all its outgoing FFT edges; the contributions of incoming FFT edges
    are summed in the frequency domain and inverse-transformed once per node; the backward
    pass reuses the forward spectra for the weight gradients.
    """

    def __init__(self, spec, output_size, *, dtype=None, conv_mode="fft", num_threads=0,
                 seed=None, phase="test"):
        self.spec = spec
        self.dtype = np.dtype(dtype or K.default_dtype())
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.num_threads = int(num_threads)
        self.rng = np.random.default_rng(seed)
        self.phase = phase
        # Keep each FFT edge's kernel spectra between passes (they are reused until the
        # filters change).  A single inference pass sets this False: spectra are then freed
        # as soon as their layer is done, so peak memory holds one layer's, not all.
        self.keep_kernel_spectra = True
        self.keeping_state = True  # the current forward pass keeps state for backward
        self.output_size = shapes.check_size(output_size, "output_size")
        self.order = shapes.topological_order(spec)
        self.sparsity = shapes.sparsity(spec, self.order)
        sizes = shapes.feature_sizes(spec, self.output_size, self.sparsity, self.order)
        self.fovs = shapes.fov(spec, self.sparsity, self.order)
        self.nodes = {name: Node(spec.nodes[name], sizes[name], self.sparsity[name], self)
                      for name in spec.nodes}
        self.edges = {}
        for name, es in spec.edges.items():
            src, dst = self.nodes[es.input], self.nodes[es.output]
            edge = TYPES[es.type](es, src, dst, self.sparsity[es.input], self)
            src.out_edges.append(edge)
            dst.in_edges.append(edge)
            self.edges[name] = edge
        clash = set(self.nodes) & set(self.edges)
        if clash:
            raise NetworkError(f"{spec.path}: node and edge groups share the names "
                               f"{sorted(clash)}; layer names must be unique")
        self.inputs = spec.inputs()
        self.outputs = spec.outputs()
        self.set_conv_mode(conv_mode)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def fov(self):
        """Field of view (z, y, x) of the first input node."""
        return self.fovs[self.inputs[0]]

    @property
    def input_sizes(self):
        return {name: self.nodes[name].size for name in self.inputs}

    @property
    def input_size(self):
        """Input patch size (z, y, x) of the first input node (output + FOV - 1 when dense)."""
        return self.nodes[self.inputs[0]].size

    # -- configuration ------------------------------------------------------------------------
    def conv_edges(self):
        return [e for e in self.edges.values() if isinstance(e, Conv)]

    def set_conv_mode(self, mode):
        """'fft', 'direct', 'file' (per-layer `fft` flags of the .znn/.h5) or {edge: mode}.

        1x1x1 kernels always run direct.
        """
        if isinstance(mode, dict):
            unknown = set(mode) - {e.name for e in self.conv_edges()}
            if unknown:
                raise ValueError(f"conv_mode names unknown conv layers {sorted(unknown)}")
            bad = {v for v in mode.values() if v not in ("fft", "direct")}
            if bad:
                raise ValueError(f"conv_mode values must be 'fft' or 'direct', got {sorted(bad)}")
        elif mode not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES} or a dict, got {mode!r}")
        for e in self.conv_edges():
            if isinstance(mode, dict):
                choice = mode.get(e.name, e.mode)
            elif mode == "file":
                choice = "fft" if e.file_fft else "direct"
            else:
                choice = mode
            e.mode = "direct" if e.ksize == (1, 1, 1) else choice
        self.conv_mode = mode

    def conv_modes(self):
        """Dict conv layer -> 'fft' | 'direct' as currently used."""
        return {e.name: e.mode for e in self.conv_edges()}

    # -- parameters ---------------------------------------------------------------------------
    def parameters(self):
        """Dict layer -> parameter array (updated in place by optimizers).

        Conv edges: filters (n_in, n_out, kz, ky, kx); transfer nodes: biases (n,).
        """
        params = {e.name: e.filters for e in self.conv_edges()}
        params.update({n.name: n.bias for n in self.nodes.values() if n.bias is not None})
        return params

    def gradients(self):
        """Dict layer -> dE/d(parameter) from the last backward pass (same keys as parameters)."""
        grads = {e.name: e.grad for e in self.conv_edges()}
        grads.update({n.name: n.bias_grad for n in self.nodes.values() if n.bias is not None})
        return grads

    def apply_constraints(self):
        """Re-tie `repeat` blocks of conv kernels (call after every parameter update)."""
        for e in self.conv_edges():
            e.tie()

    def parameter_count(self):
        return int(sum(p.size for p in self.parameters().values()))

    # -- passes -------------------------------------------------------------------------------
    def _as_maps(self, arrays, names, sizes, what):
        out = {}
        if not isinstance(arrays, dict):
            if len(names) != 1:
                raise ValueError(f"{what} must be a dict keyed by {names}")
            arrays = {names[0]: arrays}
        missing = [n for n in names if n not in arrays]
        extra = [n for n in arrays if n not in names]
        if missing or extra:
            raise ValueError(f"{what}: expected keys {names}, missing {missing}, unknown {extra}")
        for name in names:
            a = np.asarray(arrays[name])
            want = (self.nodes[name].n,) + tuple(sizes[name])
            if a.ndim == 3 and want[0] == 1:
                a = a[None]
            if a.shape != want:
                raise ValueError(f"{what}['{name}'] has shape {a.shape}, expected {want} "
                                 f"(channels, z, y, x)")
            out[name] = np.ascontiguousarray(a, dtype=self.dtype)
        return out

    def forward(self, inputs, *, keep_state=True):
        """Run the network: {input node: (C, Z, Y, X)} -> {output node: (C, *output_size)}.

        With keep_state=False (inference) every map is freed as soon as its consumers are
        done, and backward is not possible afterwards.
        """
        inputs = self._as_maps(inputs, self.inputs, self.input_sizes, "inputs")
        self.keeping_state = keep_state
        blank = [e for e in self.conv_edges() if not e.initialized]
        if blank:
            e = blank[0]
            raise NetworkError(f"{self.spec.path}:{e.spec.line}: conv layer '{e.name}' has no "
                               f"`init` and no weights were loaded for it")
        for node in self.nodes.values():
            node.release()
        for edge in self.edges.values():
            edge.release()
        pending = {name: len(node.out_edges) for name, node in self.nodes.items()}
        for name in self.order:
            node = self.nodes[name]
            if node.type == "input":
                node.value = inputs[name]
                continue
            total, parts, spectra, fft_edges = None, [], {}, {}
            for e in node.in_edges:
                x = e.src.value
                plan = e.block_plan if e.is_fft and not keep_state else None
                if e.is_fft and plan is None:
                    key = e.fft_key
                    if key not in spectra:
                        fft_edges[key] = e
                    spectra[key] = e.forward_spectral(e.src.output_spectrum(e),
                                                      spectra.get(key))
                else:
                    y = e.forward(x) if plan is None else e.forward_blocked(x, plan)
                    if node.type == "maxout":
                        parts.append(y)
                    elif total is None:
                        total = y
                    else:
                        np.add(total, y, out=total)
                if not keep_state:
                    e.release()
                    pending[e.src.name] -= 1
                    if pending[e.src.name] == 0 and e.src.name not in self.outputs:
                        e.src.release()
            for key, yf in spectra.items():
                total = fft_edges[key].output_from_spectrum(yf, out=total,
                                                            accumulate=total is not None)
            node.finish_forward(total, parts)
        self._has_state = keep_state
        return {name: self.nodes[name].value for name in self.outputs}

    def backward(self, output_grads, *, input_grads=False):
        """Back-propagate dE/d(output) for every output node; gradients() then holds dE/dW.

        `output_grads` maps each output node to dE/dy (y = the node's output, after its
        transfer function; for forward_logistics the gradient passes through unchanged).
        Returns {input node: dE/d(input)} when input_grads=True, else None.
        """
        if not getattr(self, "_has_state", False):
            raise RuntimeError("backward() needs a forward(..., keep_state=True) first")
        grads = self._as_maps(output_grads, self.outputs, {o: self.output_size
                                                           for o in self.outputs},
                              "output_grads")
        for name in self.inputs:
            self.nodes[name].needs_grad = bool(input_grads)
        for name, g in grads.items():
            self.nodes[name].grad = g.copy()
        for name in reversed(self.order):
            node = self.nodes[name]
            if node.type == "input":
                continue
            g = node.backward_through()
            gspec = {}
            for e, ge in zip(node.in_edges, node.grads_for_edges(g)):
                if e.is_fft:
                    key = e.fft_key
                    if key not in gspec:
                        gspec[key] = e.grad_spectrum(ge)
                    src = e.src
                    dxf = src.dx_spectra.get(e.fft_shape, (None, e))[0]
                    src.dx_spectra[e.fft_shape] = (
                        e.backward_spectral(src.output_spectrum(e), gspec[key], dxf), e)
                elif e.src.needs_grad or e.has_params:
                    dx = e.backward(np.ascontiguousarray(ge))
                    if e.src.needs_grad:
                        e.src.add_grad(dx)
        result = None
        if input_grads:
            result = {name: self.nodes[name].collect_grad() for name in self.inputs}
        self._has_state = False
        for node in self.nodes.values():
            if node.name not in self.outputs:
                node.value = None
            node.spectrum = {}
        return result

    # -- weights ------------------------------------------------------------------------------
    def load_weights(self, path, *, strict=True):
        """Copy weights from an .h5 saved by znn or the original ZNN, matching layers by name.

        Layers of the file that the network lacks are returned as `unused`.
        strict: every parameter layer must be present (forward passes, resuming training);
        otherwise (seeding) missing layers, and layers marked `seeding 0` / `load 0`, keep
        their initial values.  Returns (copied, missing, unused) names.
        Shapes must match exactly (NetworkError otherwise).
        """
        from znn.formats.network_h5 import read_network_h5

        layers = read_network_h5(path)
        params = self.parameters()
        copied, missing = [], []
        for name, p in params.items():
            w = layers.get(name)
            array = None if w is None else (w.filters if name in self.edges else w.biases)
            if array is None or not (strict or self._seedable(name)):
                missing.append(name)
                continue
            if tuple(array.shape) != p.shape:
                raise NetworkError(f"{path}: layer '{name}' has shape {tuple(array.shape)}, "
                                   f"the network expects {p.shape}")
            p[...] = array
            copied.append(name)
            if name in self.edges:
                self.edges[name].initialized = True
                if w.fft is not None:
                    self.edges[name].file_fft = bool(w.fft)
        unused = sorted(set(layers) - set(params) - set(self.nodes) - set(self.edges))
        if strict and missing:
            raise NetworkError(f"{path}: no weights for layers {missing} of {self.spec.path}")
        self.apply_constraints()
        if self.conv_mode == "file":
            self.set_conv_mode("file")
        return copied, missing, unused

    def _seedable(self, name):
        obj = self.spec.edges.get(name) or self.spec.nodes.get(name)
        return getattr(obj, "seeding", True)

    def save(self, path, *, momenta=None, extra=None):
        """Write the network to `path` (.h5, the original ZNN's is_stdio layout), atomically.

        momenta: optional {layer: momentum array}; extra: {absolute dataset path: array}.
        """
        from znn.formats.network_h5 import LayerWeights, write_network_h5

        layers = {}
        momenta = momenta or {}
        for name, node in self.nodes.items():
            layers[name] = LayerWeights(
                name=name, group_type="node", filters=None, biases=node.bias,
                momentum=momenta.get(name), fft=None,
                options={**node.spec.options, "type": node.type, "size": str(node.n)})
        for name, edge in self.edges.items():
            opts = {**edge.spec.options, "type": edge.type, "input": edge.src.name,
                    "output": edge.dst.name}
            is_conv = isinstance(edge, Conv)
            layers[name] = LayerWeights(
                name=name, group_type="edge", filters=edge.filters if is_conv else None,
                biases=None, momentum=momenta.get(name), fft=(edge.mode == "fft") if is_conv
                else None, options=opts)
        write_network_h5(path, layers, extra=extra, stdio=True)

    # -- reporting ----------------------------------------------------------------------------
    def layer_table(self):
        """Rows describing every edge: name, type, kernel, dilation, maps in/out, sizes."""
        rows = []
        for e in self.edges.values():
            rows.append(dict(
                name=e.name, type=e.type, kernel=tuple(e.spec.size) if e.spec.size else None,
                dilation=e.dilation, n_in=e.src.n, n_out=e.dst.n, in_size=e.src.size,
                out_size=e.dst.size, mode=getattr(e, "mode", ""),
                params=int(e.filters.size) if isinstance(e, Conv) else 0))
        return rows
