"""Random training patches from the samples of a .spec file (the original's CSamples)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from znn.data import labels as L
from znn.data.augment import Transform, apply_transform, random_transform
from znn.data.preprocess import preprocess
from znn.data.rebalance import REBALANCE_MODES, global_class_weights, rebalance_weights
from znn.errors import DataError
from znn.formats.dataset_file import DatasetSpec
from znn.formats.volumes import read_volume

__all__ = ["PatchSampler", "centre_crop"]

OUT_TYPES = ("boundary", "affinity")


def centre_crop(arr: np.ndarray, shape) -> np.ndarray:
    """Crop the last len(shape) axes of `arr` around their centre to `shape`."""
    lead = arr.ndim - len(shape)
    index = [slice(None)] * lead
    for size, target in zip(arr.shape[lead:], shape):
        lo = (size - target) // 2
        index.append(slice(lo, lo + target))
    return arr[tuple(index)]


@dataclass
class _Sample:
    """One loaded sample: volumes, the box of valid locations and the mask counts."""

    sid: int
    shape: tuple            # (Z, Y, X) of labels and (unpadded) images
    images: dict            # input node -> (C, Z', Y', X') in dtype (padded when mirroring)
    labels: dict            # output node -> raw label ids (Z, Y, X)
    masks: dict             # output node -> bool (Z, Y, X) or None
    gweights: dict          # output node -> per-channel (w+, w0) pairs, or None
    lo: np.ndarray          # smallest valid location (centre voxel of the output patch)
    hi: np.ndarray          # largest valid location
    rows: np.ndarray | None  # cumulative candidate counts per (z, y) row of the box
    count: int


class PatchSampler:
    """Draws (inputs, labels, masks, weights) patches uniformly over candidate locations.

    Parameters
    ----------
    spec : DatasetSpec
    sample_ids : ids of the [sampleN] sections to draw from.
    input_fov, input_size : input node name -> field of view / input patch size (z, y, x).
    output_size : output node name -> output patch size (z, y, x).  Every node must
        describe the same output size O (input size = O + FOV - 1).
    out_type : 'boundary' (2 channels) or 'affinity' (3 channels, x, y, z).
    dtype : float32 or float64 for every returned array.
    is_bd_mirror : pad each image symmetrically by (FOV-1)//2 low and FOV//2 high.
    rebalance_mode : 'none', 'global' or 'patch' (section 4.6 of the reference).
    is_data_aug : apply a random flip/transpose to every patch (the transpose is skipped
        when a patch is not square in y, x, since it would change the patch shape).
    rng : the only source of randomness; equal seeds give equal patch sequences.

    Attributes: `samples` (loaded samples, with `.sid`, `.lo`/`.hi` location ranges),
    `candidate_counts` (sample id -> number of candidate locations), `input_channels`
    (input node -> channel count), `out_shape` (O).

    Geometry.  Images and labels of a sample must have equal (Z,Y,X) shapes after
    `is_auto_crop` (every volume of a section with is_auto_crop is centre-cropped to the
    element-wise minimum shape of the sample, the documented intent; the original only
    cropped files of one section, with a lexicographic minimum).  A location is the
    label voxel at the centre (O-1)//2 of the output patch; its input window starts
    (FOV-1)//2 voxels before it on every axis, for odd and even FOV alike.  Candidates
    are the locations whose patches fit (fully inside the image without mirroring) and
    whose mask is > 0.  For affinities, input and label patches are fetched one voxel
    larger at the low end, transformed, then converted/cropped back (as the original).
    """

    def __init__(self, spec: DatasetSpec, sample_ids: Sequence[int],
                 input_fov: Mapping[str, Sequence[int]], input_size: Mapping[str, Sequence[int]],
                 output_size: Mapping[str, Sequence[int]], out_type: str = "boundary",
                 dtype="float32", is_bd_mirror: bool = False, rebalance_mode: str = "none",
                 is_data_aug: bool = False, rng: np.random.Generator | None = None):
        if out_type not in OUT_TYPES:
            raise ValueError(f"out_type must be boundary or affinity, got '{out_type}'")
        if rebalance_mode not in REBALANCE_MODES:
            raise ValueError(f"rebalance_mode must be none, global or patch, got "
                             f"'{rebalance_mode}'")
        if set(input_fov) != set(input_size) or not input_fov or not output_size:
            raise ValueError("input_fov and input_size need the same (non-empty) input nodes, "
                             "and output_size at least one output node")
        self.spec, self.out_type, self.dtype = spec, out_type, np.dtype(dtype)
        self.is_bd_mirror, self.rebalance_mode, self.is_data_aug = (
            bool(is_bd_mirror), rebalance_mode, bool(is_data_aug))
        self.rng = rng if rng is not None else np.random.default_rng()
        self.input_fov = {k: np.array(v, int) for k, v in input_fov.items()}
        self.input_size = {k: np.array(v, int) for k, v in input_size.items()}
        self.output_size = {k: np.array(v, int) for k, v in output_size.items()}
        sizes = {tuple(v) for v in self.output_size.values()}
        sizes |= {tuple(self.input_size[k] - self.input_fov[k] + 1) for k in self.input_fov}
        if len(sizes) != 1 or min(next(iter(sizes))) < 1 or \
                any(min(f) < 1 or len(f) != 3 for f in self.input_fov.values()):
            raise ValueError(f"inconsistent patch sizes: every output size and every input size "
                             f"- FOV + 1 must be the same positive (z, y, x), got {sorted(sizes)}")
        self.out_shape = np.array(next(iter(sizes)), int)
        self.extra = 1 if out_type == "affinity" else 0
        self._cache: dict = {}
        self.label_kinds: dict = {}  # output node -> 'one_class' (1 channel) when so declared
        self.samples = [self._load(int(sid)) for sid in sample_ids]
        if not self.samples:
            raise ValueError("no sample ids given")
        self._cumulative = np.cumsum([s.count for s in self.samples])
        self._cache.clear()
        self.label_channels = {node: 3 if out_type == "affinity" else
                               1 if self.label_kinds.get(node) == "one_class" else 2
                               for node in self.output_size}
        self.input_channels = {}
        for node in self.input_fov:
            chans = {s.images[node].shape[0] for s in self.samples}
            if len(chans) != 1:
                raise DataError(f"{spec.path}: the images bound to input node '{node}' have "
                                f"different channel counts {sorted(chans)} across samples")
            self.input_channels[node] = chans.pop()

    # ------------------------------------------------------------------ loading

    @property
    def candidate_counts(self) -> dict[int, int]:
        """Number of candidate locations per sample id."""
        return {s.sid: s.count for s in self.samples}

    def _where(self, sid):
        return f"{self.spec.path}: [sample{sid}]"

    def _read(self, fname, label):
        key = (str(fname), label)
        if key not in self._cache:
            self._cache[key] = read_volume(fname, label=label)
        return self._cache[key]

    def _load(self, sid) -> _Sample:
        spec = self.spec
        if sid not in spec.samples:
            raise DataError(f"{spec.path}: there is no [sample{sid}] (have "
                            f"{sorted(spec.samples)})")
        sample = spec.samples[sid]
        raw_images, raw_labels, raw_masks, crops = {}, {}, {}, {}
        for node in self.input_fov:
            sec = spec.input_image(sid, node)
            raw_images[node] = self._section(f"image{sample.image_id(node)}", sec.fnames,
                                             sec.is_auto_crop, sec.pp_types)
            crops[("i", node)] = sec.is_auto_crop
        for node in self.output_size:
            lid = sample.label_id(node)
            sec = spec.output_label(sid, node)
            if len(sec.fnames) != 1:
                raise DataError(f"{spec.path}: [label{lid}] lists {len(sec.fnames)} files; a "
                                "label section must have exactly one")
            lab = self._section(f"label{lid}", sec.fnames, False)
            if lab.shape[0] != 1:
                raise DataError(f"{sec.fnames[0]}: a label volume must have one channel, got "
                                f"shape {lab.shape}")
            raw_labels[node] = lab[0]
            kinds = {t.lower() for t in sec.pp_types} or {"auto"}
            if self.out_type == "boundary" and kinds == {"one_class"}:
                self.label_kinds[node] = "one_class"
            elif self.label_kinds.get(node) == "one_class":
                raise DataError(f"{spec.path}: [label{lid}] pp_types {sec.pp_types} differ from "
                                f"the one_class labels of other samples for node '{node}'")
            mask = None
            if sec.fmasks:
                mask = self._read(sec.fmasks[0], label=True)
                if mask.ndim == 4 and mask.shape[0] == 1:
                    mask = mask[0]
                if mask.shape != raw_labels[node].shape:
                    raise DataError(f"{sec.fmasks[0]}: mask shape {mask.shape} differs from the "
                                    f"label shape {raw_labels[node].shape} of {sec.fnames[0]}")
                mask = mask > 0
                if not mask.any():
                    raise DataError(f"{sec.fmasks[0]}: the mask is empty (no voxel > 0)")
            raw_masks[node] = mask
            crops[("l", node)] = sec.is_auto_crop

        # is_auto_crop: centre-crop to the element-wise minimum shape of the sample
        shapes = [a.shape[1:] for a in raw_images.values()] + \
            [a.shape for a in raw_labels.values()]
        target = tuple(int(min(s[i] for s in shapes)) for i in range(3))
        for node in raw_images:
            if crops[("i", node)]:
                raw_images[node] = centre_crop(raw_images[node], target)
        for node in raw_labels:
            if crops[("l", node)]:
                raw_labels[node] = centre_crop(raw_labels[node], target)
                if raw_masks[node] is not None:
                    raw_masks[node] = centre_crop(raw_masks[node], target)
        shape = None
        for what, arr in [(f"input '{n}'", a[0]) for n, a in raw_images.items()] + \
                [(f"output '{n}'", a) for n, a in raw_labels.items()]:
            if shape is None:
                shape, first = arr.shape, what
            elif arr.shape != shape:
                raise DataError(f"{self._where(sid)}: the volume of {what} has shape {arr.shape} "
                                f"but {first} has {shape}; label and image shapes must match "
                                "(set is_auto_crop = yes to centre-crop them)")

        images = {}
        for node, img in raw_images.items():
            fov = self.input_fov[node]
            if self.is_bd_mirror:
                pad = [(0, 0)] + [((f - 1) // 2, f // 2) for f in fov]
                img = np.pad(img, pad, mode="symmetric")
            images[node] = np.ascontiguousarray(img, dtype=self.dtype)
        gweights = {}
        for node, lab in raw_labels.items():
            gweights[node] = (global_class_weights(self.out_type, lab, raw_masks[node])
                              if self.rebalance_mode == "global" else None)
        lo, hi = self._valid_box(sid, np.array(shape))
        rows, count = self._count(sid, raw_masks, lo, hi)
        return _Sample(sid, tuple(shape), images, raw_labels, raw_masks, gweights, lo, hi,
                       rows, count)

    def _section(self, name, fnames, auto_crop, pp_types=None):
        """Read, auto-crop and (images: with pp_types) preprocess a section: (C, Z, Y, X)."""
        label = pp_types is None
        vols = [self._read(f, label) for f in fnames]
        vols = [v[np.newaxis] if v.ndim == 3 else v for v in vols]
        shapes = {v.shape[1:] for v in vols}
        if len(shapes) > 1:
            if not auto_crop:
                raise DataError(f"{self.spec.path}: the files of [{name}] have different shapes "
                                f"{sorted(shapes)} (set is_auto_crop = yes to centre-crop them)")
            target = tuple(min(s[i] for s in shapes) for i in range(3))
            vols = [centre_crop(v, target) for v in vols]
        if label:
            return vols[0]
        chans = []
        for vol, pp in zip(vols, pp_types):
            chans.extend(preprocess(c, pp, np.float64) for c in vol)
        return np.stack(chans)

    def _valid_box(self, sid, shape):
        """Smallest and largest valid location (centre voxel) per axis."""
        o, e = self.out_shape, self.extra
        c_off = e + (o - 1) // 2          # location = corner + c_off
        lo = np.zeros(3, int)             # corner >= 0 and corner + O + e <= S
        hi = shape - o - e
        if np.any(hi < lo):
            raise DataError(f"{self._where(sid)}: the label volume {tuple(shape)} is smaller "
                            f"than the output patch {tuple(o + e)} (z, y, x)")
        if not self.is_bd_mirror:
            for node, fov in self.input_fov.items():
                p = self.input_size[node] + e
                lo = np.maximum(lo, (fov - 1) // 2)
                hi = np.minimum(hi, shape - p + (fov - 1) // 2)
                if np.any(hi < lo):
                    raise DataError(
                        f"{self._where(sid)}: the image volume {tuple(shape)} is smaller than the "
                        f"input patch {tuple(p)} of node '{node}' (z, y, x); use a smaller "
                        "output size or is_bd_mirror = yes")
        return lo + c_off, hi + c_off

    def _count(self, sid, masks, lo, hi):
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        valid = None
        for m in masks.values():
            if m is not None:
                valid = m[box] if valid is None else valid & m[box]
        if valid is None:
            return None, int(np.prod(hi - lo + 1))
        rows = np.cumsum(valid.sum(axis=2, dtype=np.int64).ravel())
        if rows[-1] == 0:
            raise DataError(f"{self._where(sid)}: the mask has no voxel > 0 at any location where "
                            "a patch fits")
        return rows, int(rows[-1])

    # ------------------------------------------------------------------ drawing

    def _locate(self, s: _Sample, k: int) -> np.ndarray:
        """The k-th candidate location of sample s (row-major over its valid box)."""
        ext = s.hi - s.lo + 1
        if s.rows is None:
            return s.lo + np.array(np.unravel_index(k, ext))
        row = int(np.searchsorted(s.rows, k, side="right"))
        before = int(s.rows[row - 1]) if row else 0
        z, y = divmod(row, int(ext[1]))
        z, y = z + s.lo[0], y + s.lo[1]
        line = np.ones(ext[2], bool)
        for m in s.masks.values():
            if m is not None:
                line &= m[z, y, s.lo[2]:s.hi[2] + 1]
        x = int(np.flatnonzero(line)[k - before]) + s.lo[2]
        return np.array([z, y, x])

    def sample(self):
        """Draw one random patch: (inputs, labels, masks, weights), dicts by node name.

        inputs[node] is (C, input size); labels/masks/weights[node] are (channels, O)
        with masks 1 where training counts (all ones without a mask file) and weights
        the rebalance weights (ones for rebalance_mode none).
        """
        k = int(self.rng.integers(self._cumulative[-1]))
        i = int(np.searchsorted(self._cumulative, k, side="right"))
        s = self.samples[i]
        location = self._locate(s, k - (int(self._cumulative[i - 1]) if i else 0))
        t = Transform()
        if self.is_data_aug:
            t = random_transform(self.rng)
            sq = self.out_shape[1] == self.out_shape[2] and \
                all(p[1] == p[2] for p in self.input_size.values())
            if t.transpose and not sq:
                t = Transform(t.flip_z, t.flip_y, t.flip_x, False)
        return self.patch_at(s.sid, location, t)

    def patch_at(self, sample_id: int, location, transform: Transform | None = None):
        """The patch whose output centre voxel is `location` (label coordinates)."""
        s = next((x for x in self.samples if x.sid == sample_id), None)
        if s is None:
            raise ValueError(f"sample {sample_id} is not loaded by this sampler")
        location = np.asarray(location, int)
        if np.any(location < s.lo) or np.any(location > s.hi):
            raise ValueError(f"location {tuple(location)} is outside the valid range "
                             f"{tuple(s.lo)}..{tuple(s.hi)} of sample {sample_id}")
        e = self.extra
        corner = location - e - (self.out_shape - 1) // 2
        arrays, names = [], []
        for node, img in s.images.items():
            fov = self.input_fov[node]
            start = corner if self.is_bd_mirror else corner - (fov - 1) // 2
            stop = start + self.input_size[node] + e
            arrays.append(img[(slice(None),) + tuple(map(slice, start, stop))])
            names.append(("in", node))
        box = tuple(map(slice, corner, corner + self.out_shape + e))
        for node, lab in s.labels.items():
            arrays.append(lab[box])
            names.append(("lbl", node))
            mask = s.masks[node]
            arrays.append(np.ones(lab[box].shape, bool) if mask is None else mask[box])
            names.append(("msk", node))
        arrays = apply_transform(arrays, transform or Transform())
        got = dict(zip(names, arrays))
        inputs, lbls, msks, wts = {}, {}, {}, {}
        for node in s.images:
            x = got[("in", node)]
            inputs[node] = np.ascontiguousarray(x[:, 1:, 1:, 1:] if e else x)
        for node in s.labels:
            raw, m = got[("lbl", node)], got[("msk", node)]
            if self.out_type == "affinity":
                lbls[node] = L.affinity(raw, self.dtype)
                msks[node] = L.affinity_mask(m, self.dtype)
            elif self.label_kinds.get(node) == "one_class":
                lbls[node] = L.one_class(raw, self.dtype)
                msks[node] = (np.asarray(m) > 0)[np.newaxis].astype(self.dtype)
            else:
                lbls[node] = L.boundary(raw, self.dtype)
                msks[node] = L.boundary_mask(m, self.dtype)
            wts[node] = rebalance_weights(self.rebalance_mode, self.out_type, lbls[node],
                                          msks[node], s.gweights[node], self.dtype)
        return inputs, lbls, msks, wts
