"""Tests of preprocessing, label transforms, rebalancing, augmentation and PatchSampler."""
import itertools

import numpy as np
import pytest
import tifffile

from znn.data import labels as L
from znn.data.augment import (Transform, all_transforms, apply_transform, inverse,
                              invert_transform, random_transform)
from znn.data.preprocess import preprocess, standard2D, standard3D, symetric_rescale, \
    symmetric_rescale
from znn.data.rebalance import class_weights, global_class_weights, rebalance_weights
from znn.data.sampler import PatchSampler, centre_crop
from znn.errors import DataError, SpecError
from znn.formats.dataset_file import read_dataset_spec
from znn.formats.volumes import write_h5

# ---------------------------------------------------------------------------- preprocessing


def test_standard2d_per_slice():
    rng = np.random.default_rng(0)
    v = rng.random((3, 4, 5)) * 10
    out = standard2D(v)
    for z in range(3):
        s = v[z]
        ref = (s - s.sum() / s.size) / np.sqrt(((s - s.mean()) ** 2).mean())
        assert np.allclose(out[z], ref)


def test_standard3d_and_constant_guard():
    v = np.arange(24.0).reshape(2, 3, 4)
    ref = (v - 11.5) / np.sqrt(((v - 11.5) ** 2).mean())
    assert np.allclose(standard3D(v), ref)
    const = np.full((2, 3, 3), 7.0)
    assert np.array_equal(standard3D(const), np.zeros_like(const))
    mixed = np.stack([np.full((2, 2), 5.0), np.array([[0.0, 2.0], [0.0, 2.0]])])
    out = standard2D(mixed)
    assert np.all(np.isfinite(out)) and np.array_equal(out[0], np.zeros((2, 2)))
    assert np.allclose(out[1], [[-1, 1], [-1, 1]])


def test_symmetric_rescale_and_dispatch():
    v = np.array([[[2.0, 4.0, 6.0]]])
    assert np.allclose(symetric_rescale(v), [[[-1, 0, 1]]])
    assert symmetric_rescale is symetric_rescale
    out = preprocess(v.astype(np.uint8), "symmetric_rescale", "float64")
    assert out.dtype == np.float64 and np.allclose(out, [[[-1, 0, 1]]])
    assert preprocess(v, "None").dtype == np.float32
    with pytest.raises(ValueError, match="unknown pp_type"):
        preprocess(v, "standard4D")


# ---------------------------------------------------------------------------- labels

def test_boundary_and_one_class():
    lab = np.array([[[0, 3], [5, 0]]])
    b = L.boundary(lab)
    assert b.shape == (2, 1, 2, 2) and b.dtype == np.float32
    assert np.array_equal(b[0, 0], [[0, 1], [1, 0]]) and np.array_equal(b[1], 1 - b[0])
    assert np.array_equal(L.one_class(lab[None], "float64"), b[:1])
    bm = L.boundary_mask(np.array([[[0, 2], [1, 0]]]))
    assert bm.shape == (2, 1, 2, 2) and np.array_equal(bm[0, 0], [[0, 1], [1, 0]])
    assert np.array_equal(bm[1], bm[0])


def test_affinity_hand_made():
    # a 2x3x3 label, one voxel larger than the 1x2x2 output at the low end of every axis
    lab = np.array([[[1, 1, 2],
                     [1, 1, 2],
                     [3, 3, 0]],
                    [[1, 1, 2],
                     [1, 2, 2],
                     [3, 3, 0]]])
    aff = L.affinity(lab)
    assert aff.shape == (3, 1, 2, 2)
    # output voxel (0, i, j) is lab[1, i+1, j+1]; x compares with the voxel to its left
    x = [[lab[1, 1, 1] == lab[1, 1, 0], lab[1, 1, 2] == lab[1, 1, 1]],
         [lab[1, 2, 1] == lab[1, 2, 0], False]]             # (2,2) is label 0
    assert np.array_equal(aff[0, 0], np.array(x, float))   # [[0, 1], [1, 0]]
    assert np.array_equal(aff[0, 0], [[0, 1], [1, 0]])
    assert np.array_equal(aff[1, 0], [[0, 1], [0, 0]])     # y: with the voxel above
    assert np.array_equal(aff[2, 0], [[0, 1], [1, 0]])     # z: with the previous slice


def test_affinity_mask_is_and():
    m = np.ones((2, 2, 3), int)
    m[1, 1, 1] = 0
    am = L.affinity_mask(m)
    assert am.shape == (3, 1, 1, 2)
    # output voxel (0,0,0) is m[1,1,1] = 0 -> every edge masked; voxel (0,0,1) is m[1,1,2] = 1:
    # its x edge goes to m[1,1,1] = 0 (masked with AND), y and z edges are fine
    assert np.array_equal(am[:, 0, 0], [[0, 0], [0, 1], [0, 1]])


# ---------------------------------------------------------------------------- rebalance

def test_class_weights_formulas():
    pos = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])   # masked below: n=8, n+=3
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    assert np.allclose(class_weights(pos, mask, "half"), (0.5 * 8 / 3, 0.5 * 8 / 5))
    assert np.allclose(class_weights(pos, mask, "v1"), (5 / 8, 3 / 8))
    assert np.allclose(class_weights(pos, None, "v1"), (5 / 10, 5 / 10))
    assert class_weights(np.ones(4), None, "half") == (1.0, 1.0)
    assert class_weights(pos, np.zeros(10), "v1") == (1.0, 1.0)
    w = class_weights(pos, mask, "half")
    assert np.isclose((np.where(pos > 0, w[0], w[1]) * mask).sum(), 8)  # mean weight 1


def test_rebalance_modes_boundary():
    lab = np.array([[[0, 5, 5, 5]]])
    labels, masks = L.boundary(lab), L.boundary_mask(np.ones_like(lab))
    assert np.array_equal(rebalance_weights("none", "boundary", labels, masks), np.ones((2, 1, 1, 4)))
    patch = rebalance_weights("patch", "boundary", labels, masks)
    assert np.allclose(patch[0, 0, 0], [3 / 4, 1 / 4, 1 / 4, 1 / 4]) and np.array_equal(patch[1],
                                                                                       patch[0])
    gw = global_class_weights("boundary", np.array([[[0, 0, 0, 7]]]))
    assert np.allclose(gw, [(0.5 * 4 / 1, 0.5 * 4 / 3)])
    glob = rebalance_weights("global", "boundary", labels, masks, gw)
    assert np.allclose(glob[1, 0, 0], [4 / 6, 2, 2, 2])


def test_rebalance_affinity_global_and_patch():
    lab = np.array([[[1, 1, 2, 2]]])            # x edges: (1,1)=1, (1,2)=0, (2,2)=1
    gw = global_class_weights("affinity", lab)
    # x channel: 3 edges inside the volume, 2 positive -> v1 (n0/n, n+/n) = (1/3, 2/3)
    assert np.allclose(gw[0], (1 / 3, 2 / 3))
    assert gw[1] == (1.0, 1.0) and gw[2] == (1.0, 1.0)   # no y or z edges: a single class
    aff = np.array([[[[1, 0, 1]]], [[[0, 0, 0]]], [[[1, 1, 1]]]], float)
    w = rebalance_weights("patch", "affinity", aff, np.ones_like(aff))
    assert np.allclose(w[0, 0, 0], [1 / 3, 2 / 3, 1 / 3]) and np.all(w[1:] == 1)
    w = rebalance_weights("global", "affinity", aff, None, gw)
    assert np.allclose(w[0, 0, 0], [1 / 3, 2 / 3, 1 / 3])


# ---------------------------------------------------------------------------- augmentation

def test_transforms_identical_and_invertible():
    rng = np.random.default_rng(3)
    a = rng.random((2, 3, 4, 4))
    b = np.arange(48).reshape(3, 4, 4)
    ts = all_transforms()
    assert len(set(ts)) == 16 and ts[0].is_identity
    for t in ts:
        ta, tb = apply_transform([a, b], t)
        ref = b
        if t.flip_z:
            ref = ref[::-1]
        if t.flip_y:
            ref = ref[:, ::-1]
        if t.flip_x:
            ref = ref[:, :, ::-1]
        if t.transpose:
            ref = ref.transpose(0, 2, 1)
        assert np.array_equal(tb, ref) and ta.flags.c_contiguous
        # the same transform on both: channel 0 of a follows b's permutation of positions
        idx = apply_transform([np.arange(48).reshape(1, 3, 4, 4)], t)[0][0]
        assert np.array_equal(ta[1].ravel(), a[1].ravel()[idx.ravel()])
        back_a, back_b = invert_transform([ta, tb], t)
        assert np.array_equal(back_a, a) and np.array_equal(back_b, b)
        assert inverse(inverse(t)) == t


def test_random_transform_uses_rng():
    draws = [random_transform(np.random.default_rng(s)) for s in range(64)]
    assert len(set(draws)) > 8
    assert random_transform(np.random.default_rng(5)) == random_transform(np.random.default_rng(5))
    r = np.random.default_rng(9).random(4) > 0.5
    assert random_transform(np.random.default_rng(9)) == Transform(*map(bool, r))


# ---------------------------------------------------------------------------- sampler

def make_data(tmp_path, shape=(4, 12, 10), mask=None, label=None, image=None, extra=""):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) if image is None else image
    if label is None:
        label = (np.random.default_rng(0).random(shape) > 0.4).astype(np.uint16) * 3
    write_h5(tmp_path / "img.h5", image)
    tifffile.imwrite(tmp_path / "lbl.tif", label, photometric="minisblack")
    text = "[image1]\nfnames = img.h5\npp_types = none\n" + \
        "[label1]\nfnames = lbl.tif\n"
    if mask is not None:
        write_h5(tmp_path / "msk.h5", mask)
        text += "fmasks = msk.h5\n"
    text += "[sample1]\ninput = 1\noutput = 1\n" + extra
    (tmp_path / "d.spec").write_text(text)
    return read_dataset_spec(tmp_path / "d.spec"), image, label


def sampler(spec, fov=(1, 3, 3), out=(1, 4, 4), **kw):
    size = tuple(o + f - 1 for o, f in zip(out, fov))
    kw.setdefault("rng", np.random.default_rng(0))
    return PatchSampler(spec, kw.pop("ids", [1]), {"input": fov}, {"input": size},
                        {"output": out}, **kw)


def test_patch_sizes_and_dtypes(tmp_path):
    spec, _, _ = make_data(tmp_path)
    for out_type, ch in (("boundary", 2), ("affinity", 3)):
        for dtype in ("float32", "float64"):
            s = sampler(spec, fov=(2, 4, 3), out=(2, 3, 5), out_type=out_type, dtype=dtype)
            inputs, lbls, msks, wts = s.sample()
            assert inputs["input"].shape == (1, 3, 6, 7)
            for d in (lbls, msks, wts):
                assert d["output"].shape == (ch, 2, 3, 5) and d["output"].dtype == dtype
            assert inputs["input"].dtype == dtype and inputs["input"].flags.c_contiguous


@pytest.mark.parametrize("fov", [(1, 3, 3), (1, 4, 4), (2, 5, 4)])
def test_geometry_without_mirroring(tmp_path, fov):
    spec, image, label = make_data(tmp_path)
    out = (1, 3, 2)
    s = sampler(spec, fov=fov, out=out)
    lo, hi = s.samples[0].lo, s.samples[0].hi
    S, O, F = np.array(image.shape), np.array(out), np.array(fov)
    half = (O - 1) // 2
    assert np.array_equal(lo, (F - 1) // 2 + half)
    assert np.array_equal(hi, S - O - F // 2 + half)
    assert s.candidate_counts[1] == np.prod(hi - lo + 1)
    for loc in itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)]):
        inputs, lbls, _, _ = s.patch_at(1, loc)
        c = np.array(loc) - half                           # output corner
        a = c - (F - 1) // 2                                # input corner
        ref = image[a[0]:a[0] + O[0] + F[0] - 1, a[1]:a[1] + O[1] + F[1] - 1,
                    a[2]:a[2] + O[2] + F[2] - 1]
        assert np.array_equal(inputs["input"][0], ref)
        assert np.array_equal(lbls["output"][0], label[c[0]:c[0] + 1, c[1]:c[1] + 3,
                                                       c[2]:c[2] + 2] > 0)
    with pytest.raises(ValueError, match="outside"):
        s.patch_at(1, hi + 1)


@pytest.mark.parametrize("fov", [(1, 3, 3), (2, 4, 5)])
def test_mirroring_geometry(tmp_path, fov):
    spec, image, label = make_data(tmp_path)
    out = (1, 4, 3)
    s = sampler(spec, fov=fov, out=out, is_bd_mirror=True)
    F = np.array(fov)
    padded = np.pad(image, [((f - 1) // 2, f // 2) for f in fov], mode="symmetric")
    assert np.array_equal(s.samples[0].images["input"][0], padded)
    # every label voxel can be the corner of an output patch
    assert s.candidate_counts[1] == np.prod(np.array(image.shape) - np.array(out) + 1)
    corner = np.array([0, 0, 0])
    inputs, lbls, _, _ = s.patch_at(1, corner + (np.array(out) - 1) // 2)
    P = np.array(out) + F - 1
    assert np.array_equal(inputs["input"][0], padded[:P[0], :P[1], :P[2]])
    if fov == (1, 3, 3):  # one voxel of padding: the edge voxel is repeated (symmetric mode)
        got = inputs["input"][0, 0]
        assert got[0, 0] == image[0, 0, 0] and np.array_equal(got[0], got[1])
        assert np.array_equal(got[1, 1:], image[0, 0, :P[2] - 1])
        assert np.array_equal(got[1:, 0], image[0, :P[1] - 1, 0])
    assert np.array_equal(lbls["output"][0], label[:1, :4, :3] > 0)


def test_mask_restriction_and_masks(tmp_path):
    shape = (3, 10, 10)
    mask = np.zeros(shape, np.uint8)
    mask[1, 4, 6] = 1
    mask[2, 7, 3] = 9
    mask[0, 0, 0] = 1        # outside the valid range (no room for the input window)
    spec, image, label = make_data(tmp_path, shape, mask=mask)
    s = sampler(spec, out=(1, 2, 2))
    assert s.candidate_counts == {1: 2}
    seen = set()
    for _ in range(40):
        inputs, lbls, msks, wts = s.sample()
        centre = inputs["input"][0, 0, 1, 1]            # image is arange: decode the location
        z, rest = divmod(int(centre), 100)
        seen.add((z, *divmod(rest, 10)))
        assert msks["output"].shape == (2, 1, 2, 2)
        assert np.array_equal(msks["output"][0], msks["output"][1])
        assert np.all(wts["output"] == 1)
    # the location is the output corner (O=2: offset 0), one voxel into the input window
    assert seen == {(1, 4, 6), (2, 7, 3)}
    _, _, msks, _ = s.patch_at(1, (1, 4, 6))
    assert np.array_equal(msks["output"][0, 0], mask[1, 4:6, 6:8] > 0)


def test_uniform_over_samples(tmp_path):
    spec, _, _ = make_data(tmp_path, extra="[sample2]\ninput = 1\noutput = 1\n")
    s = sampler(spec, ids=[1, 2], out=(1, 2, 2))
    counts = s.candidate_counts
    assert counts[1] == counts[2] > 0


def test_determinism(tmp_path):
    spec, _, _ = make_data(tmp_path)

    def run(seed):
        s = sampler(spec, out_type="affinity", is_data_aug=True, rebalance_mode="patch",
                    rng=np.random.default_rng(seed))
        return [s.sample() for _ in range(5)]

    a, b, c = run(1), run(1), run(2)
    flat = lambda r: np.concatenate([d[k].ravel() for x in r for d in x for k in d])  # noqa
    assert np.array_equal(flat(a), flat(b)) and not np.array_equal(flat(a), flat(c))


def test_affinity_patch_and_augmentation(tmp_path):
    shape = (3, 8, 8)
    label = np.random.default_rng(5).integers(0, 3, shape).astype(np.uint16)
    spec, image, _ = make_data(tmp_path, shape, label=label)
    s = sampler(spec, fov=(1, 3, 3), out=(2, 3, 3), out_type="affinity")
    loc = s.samples[0].lo.copy()
    inputs, lbls, msks, _ = s.patch_at(1, loc)
    c = loc - (np.array([2, 3, 3]) - 1) // 2        # the output corner
    assert np.array_equal(lbls["output"],
                          L.affinity(label[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 3,
                                           c[2] - 1:c[2] + 3]))
    assert np.all(msks["output"] == 1)
    a = c - 1
    assert np.array_equal(inputs["input"][0], image[a[0] + 1:a[0] + 3, a[1]:a[1] + 5,
                                                    a[2]:a[2] + 5])
    # flipping x: the raw label and the enlarged input are flipped, then converted/cropped
    t = Transform(False, False, True, False)
    inputs_t, lbls_t, _, _ = s.patch_at(1, loc, t)
    raw = label[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 3, c[2] - 1:c[2] + 3][:, :, ::-1]
    assert np.array_equal(lbls_t["output"], L.affinity(raw))
    b = c - np.array([1, 2, 2])                     # corner of the enlarged input patch
    big = image[b[0]:b[0] + 3, b[1]:b[1] + 6, b[2]:b[2] + 6][:, :, ::-1]
    assert np.array_equal(inputs_t["input"][0], big[1:, 1:, 1:])


def test_boundary_augmentation_consistent(tmp_path):
    spec, image, label = make_data(tmp_path, label=None)
    s = sampler(spec, fov=(1, 3, 3), out=(1, 4, 4))
    loc = s.samples[0].lo + 1
    base = s.patch_at(1, loc)
    for t in all_transforms():
        got = s.patch_at(1, loc, t)
        assert np.array_equal(got[0]["input"], apply_transform([base[0]["input"]], t)[0])
        assert np.array_equal(got[1]["output"], apply_transform([base[1]["output"]], t)[0])


def test_global_rebalance_in_sampler(tmp_path):
    label = np.zeros((2, 8, 8), np.uint8)
    label[:, :2] = 1                               # 25% positive
    spec, _, _ = make_data(tmp_path, (2, 8, 8), label=label)
    s = sampler(spec, fov=(1, 1, 1), out=(1, 8, 8), rebalance_mode="global")
    _, lbls, _, wts = s.sample()
    w = wts["output"][0]
    assert np.allclose(w[lbls["output"][0] > 0], 0.5 * 128 / 32)
    assert np.allclose(w[lbls["output"][0] == 0], 0.5 * 128 / 96)


def test_auto_crop(tmp_path):
    image = np.arange(4 * 12 * 10, dtype=np.float32).reshape(4, 12, 10)
    label = np.ones((2, 8, 10), np.uint8)
    write_h5(tmp_path / "img.h5", image)
    write_h5(tmp_path / "lbl.h5", label)
    base = "[image1]\nfnames = img.h5\nis_auto_crop = {}\n[label1]\nfnames = lbl.h5\n" \
           "[sample1]\ninput = 1\noutput = 1\n"
    (tmp_path / "a.spec").write_text(base.format("yes"))
    s = sampler(read_dataset_spec(tmp_path / "a.spec"), fov=(1, 1, 1), out=(2, 8, 10))
    assert np.array_equal(s.samples[0].images["input"][0], image[1:3, 2:10, :])
    (tmp_path / "b.spec").write_text(base.format("no"))
    with pytest.raises(DataError, match="is_auto_crop"):
        sampler(read_dataset_spec(tmp_path / "b.spec"), fov=(1, 1, 1), out=(2, 8, 10))
    assert centre_crop(np.arange(5), (2,)).tolist() == [1, 2]


def test_two_files_two_channels(tmp_path):
    a = np.random.default_rng(0).random((2, 6, 6))
    write_h5(tmp_path / "a.h5", a)
    write_h5(tmp_path / "b.h5", a * 3)
    write_h5(tmp_path / "l.h5", np.ones((2, 6, 6)))
    (tmp_path / "d.spec").write_text("[image1]\nfnames = a.h5,\n  b.h5\npp_types = none, "
                                     "standard3D\n[label1]\nfnames = l.h5\n[sample1]\n"
                                     "input = 1\noutput = 1\n")
    s = sampler(read_dataset_spec(tmp_path / "d.spec"), fov=(1, 1, 1), out=(2, 6, 6),
                dtype="float64")
    img = s.samples[0].images["input"]
    assert img.shape == (2, 2, 6, 6) and np.allclose(img[0], a)
    assert s.input_channels == {"input": 2}
    assert np.allclose(img[1], (a - a.mean()) / a.std())


def test_data_errors(tmp_path):
    spec, _, _ = make_data(tmp_path, (2, 6, 6))
    with pytest.raises(DataError, match="smaller than the input patch"):
        sampler(spec, fov=(1, 5, 5), out=(1, 3, 3))
    sampler(spec, fov=(1, 5, 5), out=(1, 3, 3), is_bd_mirror=True)   # fine with mirroring
    with pytest.raises(DataError, match="smaller than the output patch"):
        sampler(spec, fov=(1, 1, 1), out=(3, 3, 3), is_bd_mirror=True)
    with pytest.raises(DataError, match=r"no \[sample7\]"):
        sampler(spec, ids=[7])
    with pytest.raises(SpecError, match=r"d\.spec:\d+: \[sample1\] binds no \[imageN\] to "
                                        r"the network's input node 'raw'"):
        PatchSampler(spec, [1], {"raw": (1, 1, 1)}, {"raw": (1, 2, 2)}, {"output": (1, 2, 2)})
    with pytest.raises(ValueError, match="inconsistent"):
        PatchSampler(spec, [1], {"input": (1, 1, 1)}, {"input": (1, 3, 3)}, {"output": (1, 2, 2)})

    mask = np.zeros((2, 6, 6), np.uint8)
    spec, _, _ = make_data(tmp_path, (2, 6, 6), mask=mask)
    with pytest.raises(DataError, match="mask is empty"):
        sampler(spec, out=(1, 2, 2))
    mask[0, 0, 0] = 1
    spec, _, _ = make_data(tmp_path, (2, 6, 6), mask=mask)
    with pytest.raises(DataError, match="no voxel > 0 at any location"):
        sampler(spec, out=(1, 2, 2))
    spec, _, _ = make_data(tmp_path, (2, 6, 6), mask=np.ones((2, 6, 5)))
    with pytest.raises(DataError, match="mask shape"):
        sampler(spec, out=(1, 2, 2))

    write_h5(tmp_path / "img.h5", np.zeros((2, 6, 7)))
    with pytest.raises(DataError, match="shape"):
        sampler(spec, out=(1, 2, 2))
    # a dataset inside an existing file is found (the check looks at the file part)
    make_data(tmp_path, (2, 6, 6))
    text = (tmp_path / "d.spec").read_text().replace("fnames = img.h5\n",
                                                      "fnames = img.h5:/main\n")
    (tmp_path / "d.spec").write_text(text)
    assert sampler(read_dataset_spec(tmp_path / "d.spec"), out=(1, 2, 2)).samples
    # a missing file: the .spec's line of the section that lists it
    (tmp_path / "img.h5").unlink()
    with pytest.raises(SpecError, match=r"d\.spec:1: \[image1\] fnames: \S+img\.h5 does not "
                                        r"exist"):
        sampler(spec, out=(1, 2, 2))
    spec, _, _ = make_data(tmp_path, (2, 6, 6), mask=np.ones((2, 6, 6)))
    (tmp_path / "msk.h5").unlink()
    with pytest.raises(SpecError, match=r"d\.spec:4: \[label1\] fmasks: \S+msk\.h5 does not"):
        sampler(spec, out=(1, 2, 2))
