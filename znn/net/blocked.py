"""Blocked (overlap-save) FFT convolution for forward passes over large maps.

A conv layer's forward pass over the whole map at once needs kernel spectra as large as the
map (n_in * n_out of them), so the z-factored engine (znn/_core/src/fft_zgemm.h) keeps them
transformed along y and x only and pays kz times the multiply-accumulate work of a full 3D
spectrum.  Here the output is cut into blocks instead:

- A dilated layer (dilation d per axis) is d_z*d_y*d_x independent undilated convolutions,
  one per residue class of positions modulo d (its input taps are all d apart).  So every
  block reads its input and writes its output with step d, and its kernel is undilated.
- A block of FFT size L (per axis) yields V = L - k + 1 valid outputs; all blocks share one
  set of kernel spectra of size L (computed once, F = Lz*Ly*(Lx/2+1) frequencies, kept
  frequency-major as (F, n_in, n_out)), so the multiply-accumulate of a batch of P blocks
  is one complex GEMM with P rows per frequency (kernels.bmac).
- Inputs past the map's edge (in the last blocks) are zeros; they only reach outputs that
  are outside the map and are not written.

The block size is chosen by a cost model (GEMM and FFT work per block, spectra memory
capped); Conv edges use this engine for forward-only passes when the model rates it cheaper
than the whole-map engine (see Conv.block_plan).  The model's constants are seconds per unit
of work measured on one core; only the ratio between the two engines matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from znn import kernels as K
from znn.net.shapes import fast_fft_length

MAX_BLOCK = 64               # longest block side considered
SPECTRA_CAP = 256 << 20      # bytes of block kernel spectra at most
BATCH_BYTES = 192 << 20      # bytes of block spectra (inputs + outputs) per batch

# Cost model in seconds on one core, from measurements on the development machine (float32,
# 48 -> 48 maps): what matters is the ratio between the engines, not the absolute values.
GEMM_RATE = 37e9             # flop/s of bmac (GEMMs with the transposes around them)
ZGEMM_RATE = 42e9            # flop/s of the whole-map zmac
BLOCK_FFT_POINT = 3.3e-9     # s per point and map of a block transform (~10^4-10^5 points)
COPY_POINT = 2.6e-9          # s per point and map of the block gather / scatter
BLOCK_CALL = 1e-4            # s of fixed work per block
WHOLE_FFT_POINT = 8e-9       # s per point and map of a whole-map transform (millions of points)
# An odd last axis (the real-to-complex one, which then cannot use the half-length complex
# transform) costs more per point: rfft + irfft of 1x64x49 and 1x64x63 blocks took 1.6x the
# time of 1x64x48..70, 16x32x21 and 16x32x27 1.4-1.5x that of 16x32x16..32 (float32, one
# core of an AMD EPYC).  Odd y and z lengths cost 1.25-1.35x the power-of-two ones, but a
# penalty there made the model pick net3d_7's conv2 blocks of 36x20x32 instead of 21x32x32,
# which ran 15% slower, so only x has one.
ODD_X_FFT = 1.5


def _smooth_lengths(lo, hi):
    out, n = [], max(1, lo)
    while n <= hi:
        n = fast_fft_length(n)
        if n <= hi:
            out.append(n)
        n += 1
    return out


def axis_blocks(out_len, k, d, L):
    """[(first output, count)] of the blocks along one axis: per residue s < d, outputs
    s, s+d, s+2d, .. in runs of V = L - k + 1."""
    v = L - k + 1
    runs = []
    for s in range(min(d, out_len)):
        n_s = len(range(s, out_len, d))
        runs += [(s + d * b, min(v, n_s - b)) for b in range(0, n_s, v)]
    return runs


@dataclass(frozen=True)
class BlockPlan:
    fft: tuple         # block FFT size L (z, y, x)
    ksize: tuple
    dilation: tuple
    out_size: tuple    # the layer's output map size
    n_in: int
    n_out: int
    batch: int         # blocks per batch (GEMM rows)
    seconds: float     # modelled time of a pass on one core

    @property
    def frequencies(self):
        z, y, x = self.fft
        return z * y * (x // 2 + 1)

    @property
    def valid(self):
        return tuple(L - k + 1 for L, k in zip(self.fft, self.ksize))

    def blocks(self):
        """Every block as ((z0, y0, x0) first output, (cz, cy, cx) output counts)."""
        per_axis = [axis_blocks(o, k, d, L) for o, k, d, L in
                    zip(self.out_size, self.ksize, self.dilation, self.fft)]
        return [((z0, y0, x0), (cz, cy, cx)) for z0, cz in per_axis[0]
                for y0, cy in per_axis[1] for x0, cx in per_axis[2]]

    def spectra_bytes(self, itemsize):
        return self.frequencies * self.n_in * self.n_out * 2 * itemsize

    def batch_bytes(self, itemsize):
        """Working memory of one batch: real blocks and spectra of inputs and outputs."""
        n = self.n_in + self.n_out
        return self.batch * n * (int(np.prod(self.fft)) + 2 * self.frequencies) * itemsize


@lru_cache(maxsize=256)
def plan_blocks(out_size, ksize, dilation, n_in, n_out, itemsize, spectra_cap=SPECTRA_CAP):
    """The cheapest BlockPlan for a layer, or None when no block size fits the caps.

    Every combination of 7-smooth block lengths (up to MAX_BLOCK per axis) is costed at once:
    per block a GEMM over the F frequencies and the block transforms, gather and scatter."""
    lengths, counts = [], []
    for o, k, d in zip(out_size, ksize, dilation):
        need = -(-o // d) + k - 1  # input of the longest residue class
        if need == 1:
            ls = [1]
        else:
            hi = fast_fft_length(need)
            if hi % 2:  # odd lengths cost more: the next (even) length is a candidate too
                hi = fast_fft_length(hi + 1)
            ls = _smooth_lengths(k if k > 1 else 2, min(MAX_BLOCK, hi)) or [hi]
        lengths.append(np.array(ls, np.float64))
        counts.append(np.array([len(axis_blocks(o, k, d, L)) for L in ls], np.float64))
    Lz, Ly, Lx = np.meshgrid(*lengths, indexing="ij")
    nblocks = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    F = Lz * Ly * (np.floor(Lx / 2) + 1)
    N = Lz * Ly * Lx
    fft_point = BLOCK_FFT_POINT * np.where(Lx % 2 == 1, ODD_X_FFT, 1.0)
    seconds = nblocks * (8.0 * n_in * n_out * F / GEMM_RATE
                         + (n_in + n_out) * N * (fft_point + COPY_POINT) + BLOCK_CALL)
    seconds[F * n_in * n_out * 2 * itemsize > spectra_cap] = np.inf
    at = np.unravel_index(int(np.argmin(seconds)), seconds.shape)
    if not np.isfinite(seconds[at]):
        return None
    L = tuple(int(lengths[a][at[a]]) for a in range(3))
    per_block = (n_in + n_out) * 2 * int(F[at]) * itemsize
    batch = int(max(1, min(nblocks[at], BATCH_BYTES // per_block)))
    return BlockPlan(L, tuple(ksize), tuple(dilation), tuple(out_size), n_in, n_out, batch,
                     float(seconds[at]))


def whole_map_seconds(fft_shape, out_size, ksize, n_in, n_out, compact):
    """Modelled time of the whole-map (z-factored) forward pass, same units as BlockPlan."""
    Z, Y, X = fft_shape
    kz, ky, _ = ksize
    xh = X // 2 + 1
    if Z == 1:  # planes: y plays the part of z
        flops = 8.0 * out_size[1] * ky * n_in * n_out * xh
    else:
        flops = 8.0 * out_size[0] * kz * n_in * n_out * Y * xh
        if compact:  # the y stage, applied in every pass
            flops += 8.0 * Y * xh * ky * kz * n_in * n_out
    return flops / ZGEMM_RATE + (n_in + n_out) * Z * Y * X * WHOLE_FFT_POINT


def block_spectra(filters, plan, nthreads=0):
    """Frequency-major spectra (F, n_in, n_out) of the undilated filters at the block size."""
    return K.kernel_spectra_fm(filters, (1, 1, 1), plan.fft, nthreads=nthreads)


def forward(x, wt, plan, nthreads=0):
    """The layer's output (n_out, *out_size) of the input maps x (n_in, *in_size)."""
    L, k, d = plan.fft, plan.ksize, plan.dilation
    ni, no = plan.n_in, plan.n_out
    y = np.empty((no,) + plan.out_size, x.dtype)
    blocks = plan.blocks()
    origins = np.array([o for o, _ in blocks], np.int64).reshape(-1, 3)
    counts = np.array([c for _, c in blocks], np.int64).reshape(-1, 3)
    P = min(plan.batch, len(blocks))
    vol = int(np.prod(L))
    buf = np.empty(ni * P * vol, x.dtype)  # the batch's real blocks
    offset = tuple(kk - 1 for kk in k)
    scale = 1.0 / float(np.prod(L))
    x = np.ascontiguousarray(x)
    for b0 in range(0, len(blocks), P):
        n = min(P, len(blocks) - b0)
        xb = K.blocks_gather(x, origins[b0:b0 + n], d, L,
                             out=buf[:ni * n * vol].reshape((ni, n) + L),
                             nthreads=nthreads)
        xf = K.rfft(xb.reshape((ni * n,) + L), L, nthreads=nthreads)
        yf = K.bmac(xf.reshape(ni, n, -1), wt, nthreads=nthreads)
        del xf
        ys = K.irfft(yf.reshape((no * n,) + _half(L)), L, offset, plan.valid, scale=scale,
                     nthreads=nthreads)
        del yf
        K.blocks_scatter(ys.reshape((no, n) + plan.valid), origins[b0:b0 + n],
                         counts[b0:b0 + n], d, y, nthreads=nthreads)
    return y


def _half(L):
    return (L[0], L[1], L[2] // 2 + 1)
