"""Dense sliding-window inference over whole volumes, streamed tile by tile (`znn forward`)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from znn.errors import DataError, NetworkError
from znn.formats.network_file import read_network
from znn.formats.output_writer import H5Writer
from znn.formats.volumes import open_volume_lazy
from znn.net import memory, shapes
from znn.net.graph import Network


# -- input streaming ----------------------------------------------------------------------------
def reflect(index, n):
    """Symmetric ('edge voxel repeated') reflection of integer indices into [0, n)."""
    index = np.asarray(index)
    period = 2 * n
    m = np.mod(index, period)
    return np.where(m < n, m, period - 1 - m)


class Channel:
    """One preprocessed image channel, read window by window from a lazy volume."""

    def __init__(self, path, pp_type, dtype):
        self.path, self.pp_type, self.dtype = str(path), pp_type, np.dtype(dtype)
        self.vol = open_volume_lazy(path)
        if len(self.vol.shape) == 4:
            if self.vol.shape[0] != 1:
                raise DataError(f"{path}: image files must hold one channel, got shape "
                                f"{self.vol.shape}")
        self.shape = tuple(self.vol.shape[-3:])
        self._stats()

    def _row_blocks(self, z, voxels=1 << 22):
        """Row blocks of slice z as float64 arrays of at most ~`voxels` voxels."""
        rows = max(1, voxels // self.shape[2])
        for y in range(0, self.shape[1], rows):
            box = (slice(None), z) if len(self.vol.shape) == 4 else (z,)
            block = np.asarray(self.vol[box + (slice(y, y + rows),)], dtype=np.float64)
            yield block.reshape(-1, self.shape[2])

    def _slice_stats(self, z):
        """(mean, population variance, min, max) of slice z, merged over row blocks."""
        n, mean, m2, lo, hi = 0, 0.0, 0.0, np.inf, -np.inf
        for b in self._row_blocks(z):
            k, bm = b.size, float(b.mean())
            bm2 = float(((b - bm) ** 2).sum())
            delta = bm - mean
            m2 += bm2 + delta * delta * n * k / (n + k)
            mean += delta * k / (n + k)
            n += k
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
        return mean, m2 / n, lo, hi

    def _stats(self):
        """Streaming pass for the statistics the preprocessing needs (bounded row blocks)."""
        kind = self.pp_type.lower()
        self.offset = np.zeros(self.shape[0])
        self.scale = np.ones(self.shape[0])
        if kind == "none":
            return
        if kind not in ("standard2d", "standard3d", "symetric_rescale", "symmetric_rescale"):
            raise DataError(f"{self.path}: unknown pp_type '{self.pp_type}'")
        stats = np.array([self._slice_stats(z) for z in range(self.shape[0])])
        means, vars_, mins, maxs = stats.T
        if kind == "standard2d":
            std = np.sqrt(vars_)
            self.offset, self.scale = means, 1.0 / np.where(std == 0, 1.0, std)
        elif kind == "standard3d":
            mean = means.mean()  # equal slice sizes: exact pooled mean and variance
            var = (vars_ + (means - mean) ** 2).mean()
            std = np.sqrt(var) or 1.0
            self.offset[:], self.scale[:] = mean, 1.0 / std
        else:  # [-1, 1]: 2 (v - min) / (max - min) - 1
            lo, hi = min(mins), max(maxs)
            span = (hi - lo) or 1.0
            self.offset[:], self.scale[:] = lo + span / 2.0, 2.0 / span

    def window(self, start, size, pad_lo):
        """Preprocessed (Z,Y,X) window at `start` of the volume padded by `pad_lo` (mirrored)."""
        idx = [reflect(np.arange(s - p, s - p + n), dim)
               for s, n, p, dim in zip(start, size, pad_lo, self.shape)]
        lo = [int(i.min()) for i in idx]
        hi = [int(i.max()) + 1 for i in idx]
        box = (slice(None),) if len(self.vol.shape) == 4 else ()
        block = np.asarray(self.vol[box + tuple(slice(a, b) for a, b in zip(lo, hi))])
        block = block.reshape(block.shape[-3:]).astype(np.float64)
        block = block[np.ix_(idx[0] - lo[0], idx[1] - lo[1], idx[2] - lo[2])]
        z = idx[0]
        block = (block - self.offset[z][:, None, None]) * self.scale[z][:, None, None]
        return block.astype(self.dtype)

    def close(self):
        self.vol.close()


def tile_starts(total, tile):
    """Tile starts 0, t, 2t, ... covering [0, total), the last one aligned to the end."""
    if tile >= total:
        return [0]
    starts = list(range(0, total - tile, tile))
    return starts + [total - tile]


# -- memory -------------------------------------------------------------------------------------
def available_memory():
    """MemAvailable of /proc/meminfo in bytes (or 4 GiB when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def parse_memory(text):
    """'4G', '512M', '2.5GiB' or bytes -> int bytes."""
    t = str(text).strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(float(t))
    except ValueError:
        raise ValueError(f"cannot read memory size {text!r} (use e.g. 4G or 512M)") from None


@dataclass
class Plan:
    output_size: tuple
    bytes: int


def plan_output_size(spec, out_total, requested, budget, dtype, mode, threads, cache_ffts):
    """Pick the network output size: `requested` (checked) or the largest that fits `budget`.

    Raises DataError with a suggestion when `requested` does not fit.
    """
    def cost(o):
        net = Network(spec, o, dtype=dtype, conv_mode=mode, num_threads=threads, seed=0)
        per_tile = sum(net.nodes[n].n * int(np.prod(net.nodes[n].size)) for n in net.inputs)
        per_tile += sum(net.nodes[n].n * int(np.prod(o)) for n in net.outputs)
        return memory.estimate_bytes(net, mode, training=False, cache_ffts=cache_ffts) + \
            per_tile * np.dtype(dtype).itemsize

    def clip(o):
        return tuple(max(1, min(a, b)) for a, b in zip(o, out_total))

    def largest():
        fov = next(iter(shapes.fov(spec).values()))
        flat = fov[0] == 1
        best = None
        lo, hi = 1, max(out_total)
        while lo <= hi:  # sizes grow monotonically with n: binary search
            n = (lo + hi) // 2
            o = clip((1, n, n) if flat else (n, n, n))
            b = cost(o)
            if b <= budget:
                best, lo = Plan(o, b), n + 1
            else:
                hi = n - 1
        return best

    if requested is not None:
        o = clip(requested)
        b = cost(o)
        if b <= budget:
            return Plan(o, b)
        best = largest()
        hint = f"; try forward_outsz = {','.join(map(str, best.output_size))}" if best else ""
        raise DataError(f"forward_outsz {','.join(map(str, requested))} needs about "
                        f"{memory.human(b)} but the memory budget is {memory.human(budget)} "
                        f"(--max-memory){hint}")
    best = largest()
    if best is None:
        raise DataError(f"even a 1-voxel output patch needs more than the memory budget "
                        f"{memory.human(budget)} (--max-memory)")
    return best


# -- the job -------------------------------------------------------------------------------------
def softmax_channels(a):
    m = a.max(axis=0, keepdims=True)
    e = np.exp(a - m)
    return e / e.sum(axis=0, keepdims=True)


class VolumeForward:
    """Run one network densely over the input volumes of one sample and write the results.

    inputs: {input node: list of (path, pp_type)} (one entry per channel).
    """

    def __init__(self, znn_path, weights, *, dtype, conv_mode, num_threads, mirror,
                 outsz=None, max_memory=None, softmax=False, tta=False, out_type=None,
                 log=print, progress=None):
        if weights is None or not Path(weights).exists():
            raise NetworkError(f"forward_net {weights} does not exist: znn forward needs a "
                               "trained network (set forward_net or pass -n)")
        self.spec = read_network(znn_path)
        self.znn_path, self.weights = znn_path, weights
        self.dtype, self.mode, self.threads = np.dtype(dtype), conv_mode, num_threads
        self.mirror, self.outsz, self.softmax, self.tta = mirror, outsz, softmax, tta
        self.budget = max_memory or int(0.5 * available_memory())
        self.log, self.progress = log, progress
        if tta and out_type == "affinity":
            raise DataError("--tta averages flipped boundary maps; affinity channels change "
                            "meaning under flips, so it is not available for affinity outputs")

    def run(self, inputs, prefix):
        from znn.kernels import CACHE_FFTS

        channels = {node: [Channel(p, pp, self.dtype) for p, pp in files]
                    for node, files in inputs.items()}
        try:
            return self._run(channels, prefix, CACHE_FFTS)
        finally:
            for chans in channels.values():
                for c in chans:
                    c.close()

    def _run(self, channels, prefix, cache_ffts):
        spec = self.spec
        fovs = shapes.fov(spec)
        missing = [n for n in spec.inputs() if n not in channels]
        if missing:
            raise DataError(f"no image bound to input node(s) {missing} of {self.znn_path}")
        vol_shapes = {c.shape for chans in channels.values() for c in chans}
        if len(vol_shapes) != 1:
            raise DataError(f"the input volumes of this sample differ in shape: {vol_shapes}")
        vshape = vol_shapes.pop()
        fov = fovs[spec.inputs()[0]]
        out_total = vshape if self.mirror else tuple(v - f + 1 for v, f in zip(vshape, fov))
        if min(out_total) < 1:
            raise DataError(f"volume {vshape} is smaller than the field of view {fov}; use "
                            "is_bd_mirror = yes to process it")
        mode = "direct" if self.mode == "optimize" else self.mode  # optimize: FFT if it fits
        plan = plan_output_size(spec, out_total, self.outsz, self.budget, self.dtype, mode,
                                self.threads, cache_ffts)
        net = Network(spec, plan.output_size, dtype=self.dtype, conv_mode=mode,
                      num_threads=self.threads, seed=0)
        net.load_weights(self.weights, strict=True)
        if self.mode == "optimize":  # saved plan (znn optimize-conv) or timed now
            from znn.net.conv_plan import plan_network

            per_tile = plan.bytes - memory.estimate_bytes(net, training=False,
                                                          cache_ffts=cache_ffts)
            plan_network(net, self.znn_path, training=False, budget=self.budget - per_tile,
                         log=self.log)
        o = net.output_size
        pads = {n: tuple((f - 1) // 2 if self.mirror else 0 for f in fovs[n]) for n in net.inputs}
        starts = list(itertools.product(*(tile_starts(t, s) for t, s in zip(out_total, o))))
        net.keep_kernel_spectra = len(starts) > 1  # one tile: no later pass reuses them
        self.log(f"volume {'x'.join(map(str, vshape))} -> output "
                 f"{'x'.join(map(str, out_total))}: {len(starts)} tile(s) of "
                 f"{'x'.join(map(str, o))}, ~{memory.human(plan.bytes)}")
        writers = {name: H5Writer(Path(f"{prefix}_{name}.h5"), (net.nodes[name].n,) + out_total,
                                  self.dtype, o, self.threads) for name in net.outputs}
        t0, done, total = time.perf_counter(), 0, int(np.prod(out_total))
        try:
            for k, start in enumerate(starts):
                tile = self._tile(net, channels, pads, start)
                for name, arr in tile.items():
                    writers[name].write(start, arr)
                done = min(total, (k + 1) * int(np.prod(o)))
                if self.progress:
                    self.progress(k + 1, len(starts), done, time.perf_counter() - t0)
            paths = []
            for name, w in writers.items():
                paths += w.finish(Path(f"{prefix}_{name}"))
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        seconds = time.perf_counter() - t0
        self.log(f"done: {total:,} voxels in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} "
                 f"voxels/s); wrote {', '.join(str(p) for p in paths)}")
        return paths

    def _tile(self, net, channels, pads, start):
        inputs = {}
        for name in net.inputs:
            size = net.nodes[name].size
            inputs[name] = np.stack([c.window(start, size, pads[name]) for c in channels[name]])
        if not self.tta:
            out = net.forward(inputs, keep_state=False)
            return {k: softmax_channels(v) if self.softmax else v for k, v in out.items()}
        from znn.data.augment import all_transforms, apply_transform, invert_transform

        square = net.output_size[1] == net.output_size[2]
        flat = all(net.nodes[n].size[0] == 1 for n in net.inputs)
        ts = [t for t in all_transforms() if (square or not t.transpose)
              and not (flat and t.flip_z)]
        acc = None
        for t in ts:
            x = {k: apply_transform([v], t)[0] for k, v in inputs.items()}
            out = net.forward(x, keep_state=False)
            out = {k: invert_transform([softmax_channels(v) if self.softmax else v], t)[0]
                   for k, v in out.items()}
            acc = out if acc is None else {k: acc[k] + out[k] for k in acc}
        return {k: (v / len(ts)).astype(self.dtype) for k, v in acc.items()}
