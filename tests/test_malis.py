"""Tests of znn.malis against a brute-force maximin-edge reference written here."""
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from znn import malis
from znn._core import _malis
from znn.errors import KernelError

STRIDE_AXIS = {0: 2, 1: 1, 2: 0}  # channel -> numpy axis of (Z, Y, X)


def graph_edges(shape):
    """All (c, v1, v) neighbour edges of a (Z, Y, X) grid; v1 = predecessor of v."""
    Z, Y, X = shape
    idx = np.arange(Z * Y * X).reshape(shape)
    out = []
    for c in range(3):
        ax = STRIDE_AXIS[c]
        sl_v = [slice(None)] * 3
        sl_p = [slice(None)] * 3
        sl_v[ax], sl_p[ax] = slice(1, None), slice(None, -1)
        for v, p in zip(idx[tuple(sl_v)].ravel(), idx[tuple(sl_p)].ravel()):
            out.append((c, int(p), int(v)))
    return out


def components(n, pairs):
    if not pairs:
        return np.arange(n)
    a, b = np.array(pairs).T
    g = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def ref_segment(true_affs):
    """Components of edges > 0.5, singletons 0, raster-order numbering."""
    shape = true_affs.shape[1:]
    n = int(np.prod(shape))
    flat = true_affs.reshape(3, -1)
    lab = components(n, [(p, v) for c, p, v in graph_edges(shape) if flat[c, v] > 0.5])
    sizes = np.bincount(lab)
    seg = np.zeros(n, dtype=np.int64)
    ids = {}
    for v in range(n):
        if sizes[lab[v]] > 1:
            seg[v] = ids.setdefault(lab[v], len(ids) + 1)
    return seg.reshape(shape)


def brute_force(affs, true_affs, high=1.0, low=0.0, frac=False):
    """Maximin edge of every labelled pair: the first sorted edge whose prefix connects it."""
    shape = affs.shape[1:]
    n = int(np.prod(shape))
    seg = ref_segment(true_affs).ravel()
    flat = affs.reshape(3, -1)
    edges = []
    for c, p, v in graph_edges(shape):
        a = min(float(flat[c, v]), high)
        if a > low:
            edges.append((a, p, c, v))
    # documented order: a descending, then predecessor index descending, then z, y, x
    edges.sort(key=lambda e: (-e[0], -e[1], -e[2]))
    u, w = np.triu_indices(n, 1)
    keep = (seg[u] > 0) & (seg[w] > 0)
    u, w = u[keep], w[keep]
    same = seg[u] == seg[w]
    sizes = np.bincount(seg).astype(float)
    pw = 1.0 / (sizes[seg[u]] * sizes[seg[w]]) if frac else np.ones(len(u))
    merger = np.zeros(3 * n)
    splitter = np.zeros(3 * n)
    decided = np.zeros(len(u), dtype=bool)
    st = dict(tp=0.0, tn=0.0, fp=0.0, fn=0.0)
    for t in range(len(edges)):
        lab = components(n, [(e[1], e[3]) for e in edges[: t + 1]])
        new = (lab[u] == lab[w]) & ~decided
        decided |= new
        a, _, c, v = edges[t]
        s = pw[new & same].sum()
        d = pw[new & ~same].sum()
        splitter[c * n + v] += s
        merger[c * n + v] += d
        st["fn" if a < 0.5 else "tp"] += s
        st["fp" if a > 0.5 else "tn"] += d
    nl = int((seg > 0).sum())
    st["n"] = nl
    st["rand_error"] = (st["fp"] + st["fn"]) / (nl * (nl - 1) / 2) if nl > 1 else 0.0
    return merger.reshape(affs.shape), splitter.reshape(affs.shape), st


def random_case(rng, shape, dtype, levels=5, blocky=True):
    """Quantised affinities (many ties) and a segmentation with boundary voxels."""
    affs = (rng.integers(0, levels, (3,) + shape) / (levels - 1)).astype(dtype)
    if blocky:
        seg = rng.integers(1, 4, shape)
        seg[rng.random(shape) < 0.2] = 0
        true = malis.affinities_from_segmentation(seg, dtype=dtype)
    else:
        true = (rng.random((3,) + shape) < 0.45).astype(dtype)
    return affs, true


CASES = [((1, 5, 6), np.float32), ((1, 4, 7), np.float64), ((3, 3, 4), np.float32),
         ((2, 4, 3), np.float64)]


@pytest.mark.parametrize("shape,dtype", CASES)
@pytest.mark.parametrize("blocky", [True, False])
def test_weights_equal_brute_force(shape, dtype, blocky):
    rng = np.random.default_rng(hash((shape, blocky)) % 2**32)
    for _ in range(3):
        affs, true = random_case(rng, shape, dtype, blocky=blocky)
        m, s, st = malis.malis_weights(affs, true)
        rm, rs, rst = brute_force(affs, true)
        np.testing.assert_array_equal(m, rm)
        np.testing.assert_array_equal(s, rs)
        for k in ("n", "tp", "tn", "fp", "fn"):
            assert st[k] == rst[k], k
        assert st["rand_error"] == pytest.approx(rst["rand_error"], rel=1e-14)


@pytest.mark.parametrize("high,low", [(0.75, 0.25), (0.5, 0.0), (1.0, 0.5), (0.5, -1.0)])
def test_clipping_equals_brute_force(high, low):
    rng = np.random.default_rng(7)
    for shape, dtype in CASES:
        affs, true = random_case(rng, shape, dtype)
        m, s, st = malis.malis_weights(affs, true, high=high, low=low)
        rm, rs, rst = brute_force(affs, true, high=high, low=low)
        np.testing.assert_array_equal(m, rm)
        np.testing.assert_array_equal(s, rs)
        assert [st[k] for k in ("tp", "tn", "fp", "fn")] == \
            [rst[k] for k in ("tp", "tn", "fp", "fn")]


def test_continuous_affinities_equal_brute_force():
    rng = np.random.default_rng(3)
    for shape, dtype in CASES:
        affs, true = random_case(rng, shape, dtype)
        affs = rng.random(affs.shape).astype(dtype)
        m, s, _ = malis.malis_weights(affs, true)
        rm, rs, _ = brute_force(affs, true)
        np.testing.assert_array_equal(m, rm)
        np.testing.assert_array_equal(s, rs)


@pytest.mark.parametrize("shape,dtype", CASES)
def test_frac_norm_equals_brute_force(shape, dtype):
    rng = np.random.default_rng(11)
    affs, true = random_case(rng, shape, dtype)
    m, s, st = malis.malis_weights(affs, true, frac_norm=True)
    rm, rs, rst = brute_force(affs, true, frac=True)
    np.testing.assert_allclose(m, rm, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s, rs, rtol=1e-12, atol=1e-13)
    assert np.all(m[rm == 0] == 0) and np.all(s[rs == 0] == 0)
    for k in ("tp", "tn", "fp", "fn"):
        assert st[k] == pytest.approx(rst[k], rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("shape", [(1, 9, 11), (4, 6, 5)])
def test_connected_graph_sums_to_all_pairs(shape):
    rng = np.random.default_rng(5)
    seg = rng.integers(0, 5, shape)
    true = malis.affinities_from_segmentation(seg)
    affs = (0.05 + 0.9 * rng.random(true.shape)).astype(np.float32)
    m, s, st = malis.malis_weights(affs, true)
    n = st["n"]
    assert n > 10
    assert m.sum() + s.sum() == n * (n - 1) // 2
    assert st["tp"] + st["tn"] + st["fp"] + st["fn"] == n * (n - 1) // 2
    # frac: each same-segment pair weighs 1/s_k^2, each pair of segments 1 in total
    tseg = malis.segment_from_affinities(true)
    sizes = np.bincount(tseg.ravel())[1:]
    k = len(sizes)
    m, s, _ = malis.malis_weights(affs, true, frac_norm=True)
    expect = np.sum((sizes - 1) / (2.0 * sizes)) + k * (k - 1) / 2
    assert m.sum() + s.sum() == pytest.approx(expect, rel=1e-12)


def test_2d_ignores_z_channel():
    rng = np.random.default_rng(2)
    affs, true = random_case(rng, (1, 6, 6), np.float64)
    m, s, st = malis.malis_weights(affs, true)
    affs[2] = rng.random(affs[2].shape)
    true[2] = 1.0
    m2, s2, st2 = malis.malis_weights(affs, true)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(s, s2)
    assert not m[2].any() and not s[2].any()
    assert st == st2


def test_float32_and_float64_agree():
    rng = np.random.default_rng(4)
    affs, true = random_case(rng, (3, 8, 8), np.float32, levels=9)
    r32 = malis.malis_weights(affs, true, high=0.875, low=0.125)
    r64 = malis.malis_weights(affs.astype(np.float64), true, high=0.875, low=0.125)
    np.testing.assert_array_equal(r32[0], r64[0])
    np.testing.assert_array_equal(r32[1], r64[1])
    assert r32[2] == r64[2]


def test_negative_zero_ties_with_zero():
    rng = np.random.default_rng(8)
    affs, true = random_case(rng, (1, 5, 5), np.float64, levels=3)
    flipped = affs.copy()
    flipped[flipped == 0] = -0.0
    a = malis.malis_weights(affs, true, low=-1.0)
    b = malis.malis_weights(flipped, true, low=-1.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_rand_error_uses_all_edges():
    rng = np.random.default_rng(9)
    affs, true = random_case(rng, (2, 5, 5), np.float64)
    affs = affs * 2.0 - 1.5  # values in [-1.5, 0.5]: clipping at high=1/low=0 would drop most
    st = malis.rand_stats(affs, true)
    rm, rs, rst = brute_force(affs, true, high=np.inf, low=-np.inf)
    assert [st[k] for k in ("n", "tp", "tn", "fp", "fn")] == \
        [rst[k] for k in ("n", "tp", "tn", "fp", "fn")]
    assert malis.rand_error(affs, true) == pytest.approx(rst["rand_error"], rel=1e-14)
    assert rst["rand_error"] > 0


def test_rand_error_perfect_prediction_and_no_pairs():
    seg = np.array([[[1, 1, 0, 2], [1, 1, 0, 2], [3, 3, 0, 2]]])
    true = malis.affinities_from_segmentation(seg)
    assert malis.rand_error(true, true) == 0.0
    assert malis.rand_error(1.0 - true, true) > 0.0
    empty = np.zeros((3, 1, 3, 3), np.float32)
    assert malis.rand_stats(empty, empty)["n"] == 0
    assert malis.rand_error(empty, empty) == 0.0


def test_segment_matches_reference_and_round_trip():
    rng = np.random.default_rng(12)
    for shape in [(1, 7, 9), (4, 5, 6)]:
        true = (rng.random((3,) + shape) < 0.4).astype(np.float32)
        np.testing.assert_array_equal(malis.segment_from_affinities(true), ref_segment(true))
    # connected segments of size >= 2 come back renumbered in raster order
    seg = np.zeros((2, 4, 6), dtype=np.int64)
    seg[:, :2, :3] = 7
    seg[:, 2:, :] = 3
    seg[:, :2, 4:] = 5
    out = malis.segment_from_affinities(malis.affinities_from_segmentation(seg))
    expect = np.select([seg == 7, seg == 5, seg == 3], [1, 2, 3], 0)
    np.testing.assert_array_equal(out, expect)


def test_affinities_from_segmentation_formula():
    seg = np.array([[[1, 1, 2], [1, 0, 2]], [[1, 1, 2], [0, 0, 2]]])
    aff = malis.affinities_from_segmentation(seg)
    assert aff.shape == (3, 2, 2, 3) and aff.dtype == np.float32
    z, y, x = 1, 0, 1  # seg 1, neighbours along x (1), y (n/a at y=0), z (1)
    assert aff[0, z, y, x] == 1 and aff[1, z, y, x] == 0 and aff[2, z, y, x] == 1
    assert aff[0, 0, 0, 2] == 0  # 2 vs 1
    assert aff[1, 0, 1, 0] == 1 and aff[1, 0, 1, 1] == 0  # 1-1, 0 is never connected
    assert not aff[0, :, :, 0].any() and not aff[1, :, 0].any() and not aff[2, 0].any()
    assert malis.affinities_from_segmentation(seg[0]).shape == (3, 1, 2, 3)


def plain_weights(props, true, frac=False):
    m, s, st = malis.malis_weights(props, true, frac_norm=frac)
    return m + s, st


def test_norm_types():
    rng = np.random.default_rng(13)
    props, true = random_case(rng, (2, 6, 6), np.float32)
    props = rng.random(props.shape).astype(np.float32)
    w0, st = plain_weights(props, true)
    n = st["n"]
    w, st2 = malis.malis_gradient_weights(props, true, "none")
    assert w.dtype == np.float32 and st2["rand_error"] == st["rand_error"]
    np.testing.assert_allclose(w, w0, rtol=1e-7)
    w, _ = malis.malis_gradient_weights(props, true, "num")
    np.testing.assert_allclose(w, w0 / n, rtol=1e-6)
    w, _ = malis.malis_gradient_weights(props, true, "pair")
    np.testing.assert_allclose(w, w0 / (n * (n - 1)), rtol=1e-6)
    wf, _ = plain_weights(props, true, frac=True)
    w, _ = malis.malis_gradient_weights(props, true, "frac")
    np.testing.assert_allclose(w, wf, rtol=1e-6)
    assert not np.allclose(wf, w0)
    with pytest.raises(ValueError, match="norm_type"):
        malis.malis_gradient_weights(props, true, "bogus")


def test_constrained_mode():
    rng = np.random.default_rng(14)
    props, true = random_case(rng, (2, 6, 7), np.float64)
    props = rng.random(props.shape)
    w, st = malis.malis_gradient_weights(props, true, constrained=True)
    pm = np.where(true > 0, 1.0, props)
    ps = np.where(true == 0, 0.0, props)
    m, _, stm = malis.malis_weights(pm, true, high=1.0, low=0.5)
    _, s, sts = malis.malis_weights(ps, true, high=0.5, low=0.0)
    # merger weights only on true boundaries, splitter weights only inside segments
    assert not m[true > 0].any() and not s[true == 0].any()
    assert m.sum() > 0 and s.sum() > 0
    np.testing.assert_allclose(w, m / m.sum() + s / s.sum(), rtol=1e-12)
    assert w.sum() == pytest.approx(2.0)
    assert stm["tn"] == 0  # the merger pass keeps only edges above 0.5
    expect = (stm["fp"] + sts["fn"]) / (stm["tp"] + stm["tn"] + stm["fp"] + stm["fn"])
    assert st["rand_error"] == pytest.approx(expect)
    assert st["merger_pass"] == stm and st["splitter_pass"] == sts
    wn, _ = malis.malis_gradient_weights(props, true, "num", constrained=True)
    np.testing.assert_allclose(wn, w / st["n"], rtol=1e-12)


def test_constrained_perfect_prediction_gives_zero_rand_error():
    seg = np.array([[[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]]])
    true = malis.affinities_from_segmentation(seg, dtype=np.float64)
    w, st = malis.malis_gradient_weights(true, true, constrained=True)
    assert st["rand_error"] == 0.0
    assert np.isfinite(w).all()


def test_malis_cost():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    lab = np.array([1.0, 1.0, 0.0, 0.0])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    mc, me = malis.malis_cost(p, lab, w)
    assert mc == pytest.approx((2 + 3) / 10)
    bce = [-np.log(0.9), -np.log(0.2), -np.log(0.4), -np.log(0.6)]
    assert me == pytest.approx(np.dot(w, bce) / 10)
    mc, me = malis.malis_cost(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.ones(2))
    assert mc == 1.0 and np.isfinite(me) and me > 10
    assert malis.malis_cost(p, lab, np.zeros(4)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="w"):
        malis.malis_cost(p, lab, w[:3])


def test_input_validation():
    good = np.zeros((3, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="affs"):
        malis.malis_weights(np.zeros((2, 1, 4, 4), np.float32), good)
    with pytest.raises(ValueError, match="true_affs"):
        malis.malis_weights(good, np.zeros((3, 1, 4, 5)))
    with pytest.raises(ValueError, match="affs"):
        malis.malis_weights(good.astype(np.int32), good)
    with pytest.raises(ValueError, match="3 channels"):
        malis.malis_gradient_weights(np.zeros((2, 1, 4, 4), np.float32), good)
    with pytest.raises(ValueError, match="seg"):
        malis.affinities_from_segmentation(np.zeros((2, 2, 2, 2), int))
    # boolean / integer true affinities are accepted and equal the float ones
    rng = np.random.default_rng(1)
    affs, true = random_case(rng, (1, 5, 5), np.float32)
    a = malis.malis_weights(affs, true)
    b = malis.malis_weights(affs, true.astype(bool))
    np.testing.assert_array_equal(a[0], b[0])
    # the kernel rejects ids outside [0, nseg]
    seg = np.full((1, 4, 4), 3, dtype=np.int64)
    with pytest.raises(KernelError, match="segment id"):
        _malis.weights(good, seg, 2)
    with pytest.raises(TypeError, match="seg"):
        _malis.weights(good, seg.astype(np.int32), 3)


def test_nan_edges_are_left_out():
    rng = np.random.default_rng(15)
    affs, true = random_case(rng, (2, 5, 5), np.float32)
    nan = affs.copy()
    holes = rng.random(affs.shape) < 0.2
    nan[holes] = np.nan
    dropped = affs.copy()
    dropped[holes] = -1.0  # below low = 0
    a = malis.malis_weights(nan, true)
    b = malis.malis_weights(dropped, true)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_tiny_volumes():
    one = np.ones((3, 1, 1, 1), np.float32)
    m, s, st = malis.malis_weights(one, one)
    assert not m.any() and not s.any() and st["n"] == 0
    line = np.ones((3, 1, 1, 4))
    m, s, st = malis.malis_weights(line, line)
    assert st["n"] == 4 and s.sum() == 6 and m.sum() == 0


def test_concurrent_calls_release_gil_and_agree():
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(16)
    seg = rng.integers(0, 6, (4, 32, 32))
    true = malis.affinities_from_segmentation(seg)
    affs = rng.random(true.shape).astype(np.float32)
    ref = malis.malis_weights(affs, true)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: malis.malis_weights(affs, true), range(4)))
    for m, s, st in outs:
        np.testing.assert_array_equal(m, ref[0])
        np.testing.assert_array_equal(s, ref[1])
        assert st == ref[2]


def test_many_segments_medium_graph_equals_brute_force():
    rng = np.random.default_rng(17)
    seg = rng.integers(1, 40, (2, 9, 9))
    seg[:, ::3] = seg[:, 1::3]  # make most segments span more than one voxel
    seg[rng.random(seg.shape) < 0.1] = 0
    true = malis.affinities_from_segmentation(seg)
    affs = (rng.integers(0, 7, true.shape) / 6).astype(np.float32)
    m, s, st = malis.malis_weights(affs, true, low=-1.0)
    rm, rs, rst = brute_force(affs, true, low=-1.0)
    np.testing.assert_array_equal(m, rm)
    np.testing.assert_array_equal(s, rs)
    assert st["fp"] == rst["fp"] and st["fn"] == rst["fn"]


def test_large_graph_counts_every_pair_once():
    rng = np.random.default_rng(18)
    seg = np.repeat(np.repeat(rng.integers(0, 3000, (6, 20, 20)), 2, axis=1), 2, axis=2)
    true = malis.affinities_from_segmentation(seg)
    affs = rng.random(true.shape)
    for frac in (False, True):
        m, s, st = malis.malis_weights(affs, true, low=-1.0, frac_norm=frac)
        n = st["n"]
        tseg = malis.segment_from_affinities(true)
        sizes = np.bincount(tseg.ravel())[1:]
        if frac:
            k = len(sizes)
            total = np.sum((sizes - 1) / (2.0 * sizes)) + k * (k - 1) / 2
            assert m.sum() + s.sum() == pytest.approx(total, rel=1e-10)
        else:
            assert m.sum() + s.sum() == n * (n - 1) // 2
            assert s.sum() == np.sum(sizes * (sizes - 1) // 2)
