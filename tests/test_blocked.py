"""Blocked (overlap-save) FFT convolution: its kernels, block plans and the network engine."""
import numpy as np
import pytest
import reference_numpy as ref
from test_network import build, random_inputs, reference_outputs, set_params

from znn import kernels as K
from znn.errors import KernelError
from znn.net import blocked as B


def direct(x, w, d):
    """Valid convolution by explicit taps (independent of the kernels): out = sum x * w."""
    ni, no = w.shape[:2]
    k = w.shape[2:]
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(x.shape[1:], k, d))
    y = np.zeros((no,) + out)
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                win = x[:, a * d[0]:a * d[0] + out[0], b * d[1]:b * d[1] + out[1],
                        c * d[2]:c * d[2] + out[2]]
                # true convolution: tap (a, b, c) of the flipped kernel
                wt = w[:, :, k[0] - 1 - a, k[1] - 1 - b, k[2] - 1 - c]
                y += np.einsum("izyx,io->ozyx", win, wt)
    return y


def test_direct_reference_agrees_with_the_direct_kernel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 7))
    w = rng.standard_normal((2, 3, 2, 3, 2))
    np.testing.assert_allclose(direct(x, w, (2, 1, 3)), K.conv_forward(x, w, (2, 1, 3)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_and_scatter_match_numpy(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 9, 10, 11)).astype(dtype)
    origins = np.array([[0, 0, 0], [1, 2, 3], [8, 9, 10], [5, 0, 7]])
    d, L = (2, 1, 3), (4, 5, 3)
    got = K.blocks_gather(x, origins, d, L)
    for p, o in enumerate(origins):
        want = np.zeros((3,) + L, dtype)
        part = x[:, o[0]::d[0], o[1]::d[1], o[2]::d[2]][:, :L[0], :L[1], :L[2]]
        want[:, :part.shape[1], :part.shape[2], :part.shape[3]] = part
        np.testing.assert_array_equal(got[:, p], want)
    y = np.full((3, 9, 10, 11), -1.0, dtype)
    counts = np.array([[2, 3, 2], [1, 1, 1], [1, 1, 1], [2, 4, 1]])
    blk = rng.standard_normal((3, 4, 2, 5, 2)).astype(dtype)
    K.blocks_scatter(blk, origins, counts, d, y, nthreads=2)
    want = np.full_like(y, -1.0)
    for p, (o, c) in enumerate(zip(origins, counts)):
        want[:, o[0]:o[0] + d[0] * c[0]:d[0], o[1]:o[1] + d[1] * c[1]:d[1],
             o[2]:o[2] + d[2] * c[2]:d[2]] = blk[:, p, :c[0], :c[1], :c[2]]
    np.testing.assert_array_equal(y, want)


def test_scatter_outside_the_maps_is_an_error():
    y = np.zeros((1, 4, 4, 4), np.float32)
    blk = np.ones((1, 1, 2, 2, 2), np.float32)
    with pytest.raises(KernelError, match="blocks_scatter: block 0 axis 2"):
        K.blocks_scatter(blk, [[0, 0, 3]], [[2, 2, 2]], (1, 1, 1), y)
    with pytest.raises(KernelError, match="origin -1"):
        K.blocks_gather(y, [[0, -1, 0]], (1, 1, 1), (2, 2, 2))
    with pytest.raises(ValueError, match="counts"):
        K.blocks_scatter(blk, [[0, 0, 0]], [[1, 1]], (1, 1, 1), y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,d,n", [((3, 2, 4), (1, 2, 1), (7, 9, 12)),
                                   ((1, 3, 3), (1, 2, 1), (1, 10, 9)),
                                   ((2, 1, 1), (3, 1, 1), (8, 1, 1)),
                                   ((1, 1, 1), (1, 1, 1), (1, 1, 4))])
def test_frequency_major_spectra_are_the_kernel_spectra_transposed(dtype, k, d, n):
    w = np.random.default_rng(8).standard_normal((2, 3) + k).astype(dtype)
    want = K.kernel_spectra(w, d, n).reshape(6, -1).T.reshape(-1, 2, 3)
    got = K.kernel_spectra_fm(w, d, n, nthreads=2)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_bmac_forward_backward_and_accumulate(dtype):
    rng = np.random.default_rng(2)

    def c(*s):
        return (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(dtype)

    ni, no, P, F = 5, 3, 4, 300
    x, w, g = c(ni, P, F), c(F, ni, no), c(no, P, F)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    y = K.bmac(x, w, nthreads=2)
    np.testing.assert_allclose(y, np.einsum("ipf,fij->jpf", x, w), rtol=tol, atol=tol * 10)
    dx = K.bmac(g, w, backward=True)
    np.testing.assert_allclose(dx, np.einsum("jpf,fij->ipf", g, w.conj()), rtol=tol,
                               atol=tol * 10)
    K.bmac(x, w, y, accumulate=True)
    np.testing.assert_allclose(y, 2 * np.einsum("ipf,fij->jpf", x, w), rtol=tol,
                               atol=tol * 20)
    with pytest.raises(ValueError, match="src"):
        K.bmac(x[:, :, :10], w)


@pytest.mark.parametrize("o,k,d,L", [(10, 3, 1, 5), (29, 7, 2, 21), (13, 2, 4, 3), (1, 1, 1, 1),
                                     (5, 1, 3, 2)])
def test_axis_blocks_cover_every_output_once(o, k, d, L):
    hit = np.zeros(o, int)
    for first, count in B.axis_blocks(o, k, d, L):
        assert 1 <= count <= L - k + 1
        hit[first:first + d * count:d] += 1
    assert (hit == 1).all()


CASES = [  # n_in, n_out, kernel, dilation, input size
    (3, 4, (3, 3, 3), (1, 1, 1), (20, 21, 22)),
    (3, 4, (3, 3, 3), (2, 3, 1), (20, 21, 22)),
    (2, 5, (1, 5, 5), (1, 2, 2), (3, 40, 41)),
    (2, 3, (2, 3, 4), (3, 1, 2), (17, 9, 30)),
    (1, 2, (1, 4, 4), (1, 4, 4), (1, 37, 30)),
    (2, 2, (1, 1, 1), (1, 1, 1), (2, 5, 6)),
    (2, 3, (1, 7, 7), (1, 1, 1), (1, 35, 35)),  # x block one longer than the input
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cap", [B.SPECTRA_CAP, 6000])
def test_blocked_forward_matches_direct_convolution(case, cap):
    ni, no, k, d, ins = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((ni,) + ins)
    w = rng.standard_normal((ni, no) + k)
    want = direct(x, w, d)
    plan = B.plan_blocks(want.shape[1:], k, d, ni, no, 8, cap)
    assert plan is not None and plan.spectra_bytes(8) <= cap
    got = B.forward(x, B.block_spectra(w, plan), plan, nthreads=2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    got32 = B.forward(x32, B.block_spectra(w32, plan), plan)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_small_batches_give_the_same_result():
    ni, no, k, d, ins = CASES[1]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((ni,) + ins)
    w = rng.standard_normal((ni, no) + k)
    out = tuple(n - (kk - 1) * dd for n, kk, dd in zip(ins, k, d))
    plan = B.plan_blocks(out, k, d, ni, no, 8)
    one = B.BlockPlan(plan.fft, plan.ksize, plan.dilation, plan.out_size, ni, no, 1,
                      plan.seconds)
    wt = B.block_spectra(w, plan)
    np.testing.assert_allclose(B.forward(x, wt, one), B.forward(x, wt, plan), atol=1e-12)
    assert len(plan.blocks()) > plan.batch > 1 or plan.batch == len(plan.blocks())


def test_an_odd_last_axis_gives_way_to_the_next_even_length():
    # 29 outputs of a 7-tap kernel need 35 inputs: one block of 35 (odd) along y, but along x
    # (real-to-complex, where odd lengths are slow) one of 36, past the map's edge
    plan = B.plan_blocks((1, 29, 29), (1, 7, 7), (1, 1, 1), 10, 10, 4)
    assert plan.fft == (1, 35, 36) and len(plan.blocks()) == 1
    assert B.plan_blocks((1, 57, 57), (1, 7, 7), (1, 1, 1), 10, 10, 4).fft == (1, 63, 64)


def test_no_plan_when_no_block_fits_the_spectra_cap():
    assert B.plan_blocks((10, 10, 10), (3, 3, 3), (1, 1, 1), 48, 48, 4, 1000) is None


def test_model_prefers_blocks_for_large_3d_layers_and_whole_maps_for_small_ones():
    big = B.plan_blocks((58, 154, 154), (7, 7, 7), (2, 2, 2), 48, 48, 4)
    whole = B.whole_map_seconds((70, 168, 168), (58, 154, 154), (7, 7, 7), 48, 48, True)
    assert big.seconds < whole
    small = B.plan_blocks((2, 4, 4), (3, 3, 3), (1, 1, 1), 8, 8, 4)
    assert small.seconds > B.whole_map_seconds((4, 6, 6), (2, 4, 4), (3, 3, 3), 8, 8, False)


@pytest.mark.parametrize("name,out", [("tiny3d.znn", (3, 4, 5)), ("N4.znn", (1, 3, 4))])
def test_network_inference_pass_with_blocked_layers_matches_the_reference(monkeypatch, name,
                                                                           out):
    monkeypatch.setenv("ZNN_FFT_BLOCKED", "1")
    rng = np.random.default_rng(5)
    net = build(name, out, dtype="float64", conv_mode="fft")
    assert all(e.block_plan is not None for e in net.conv_edges())
    params = ref.random_params(net.spec, rng)
    set_params(net, params)
    inputs = random_inputs(net, rng)
    want = reference_outputs(net, params, inputs)
    got = net.forward(inputs, keep_state=False)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12)
    # a training pass never runs blocked (its spectra serve the backward pass)
    got = net.forward(inputs)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12)


def test_cached_block_spectra_follow_the_filters(monkeypatch):
    monkeypatch.setenv("ZNN_FFT_BLOCKED", "1")
    rng = np.random.default_rng(6)
    net = build("tiny3d.znn", (3, 4, 5), dtype="float64", conv_mode="fft")
    inputs = random_inputs(net, rng)
    first = {k: v.copy() for k, v in net.forward(inputs, keep_state=False).items()}
    params = ref.random_params(net.spec, rng)
    set_params(net, params)  # in place, as an optimizer step
    got = net.forward(inputs, keep_state=False)
    want = reference_outputs(net, params, inputs)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12)
        assert not np.allclose(first[key], got[key])


def test_forward_only_fft_memory_counts_the_blocked_engine(monkeypatch):
    net = build("tiny3d.znn", (3, 4, 5), conv_mode="fft")
    e = next(e for e in net.conv_edges() if e.ksize != (1, 1, 1))
    monkeypatch.setenv("ZNN_FFT_BLOCKED", "1")
    plan = e.block_plan
    assert e.spectra_bytes(training=False) == plan.spectra_bytes(4) + plan.batch_bytes(4)
    monkeypatch.setenv("ZNN_FFT_BLOCKED", "0")
    assert e.block_plan is None
    assert e.spectra_bytes(training=False) == e.spectra_bytes()
