"""`znn train`: learning, checkpoints, resume (also after kill -9), seeding, bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import NETWORKS, synthetic_stack, write_run
from znn.checkpoint import STATE, read_training_state
from znn.cli.main import cli
from znn.errors import DataError, SpecError
from znn.formats.config_file import read_config
from znn.trainer import Trainer


def trainer(cfg, lines=None, **overrides):
    lines = [] if lines is None else lines
    return Trainer(read_config(cfg, {k: str(v) for k, v in overrides.items()}),
                   log=lines.append)


def test_loss_falls_on_synthetic_boundaries(tmp_path):
    cfg = write_run(tmp_path)
    lines = []
    t = trainer(cfg, lines, Max_iter=300, Num_iter_per_show=50, Num_iter_per_test=1000,
                Num_iter_per_save=1000, Num_iter_per_annealing=1000, eta=0.02,
                rebalance_mode="global")
    t.run()
    costs = [row["err"] for row in t.curve.train]
    errors = [row["cls"] for row in t.curve.train]
    assert len(costs) == 6
    assert costs[-1] < 0.6 * costs[0]
    assert errors[-1] < 0.1
    assert any(line.startswith("iter     300/300") for line in lines)
    assert (tmp_path / "out" / "net_current.h5").exists()
    assert (tmp_path / "out" / "net_curve.csv").read_text().count("\ntrain,") == 6
    assert (tmp_path / "out" / "net_curve.png").stat().st_size > 1000


def test_checkpoint_holds_iteration_eta_momentum_and_curve(tmp_path):
    cfg = write_run(tmp_path)
    t = trainer(cfg)
    t.run()  # 20 iterations, anneal x0.5 every 7 -> eta 0.05 * 0.5^2
    path = tmp_path / "out" / "net_20.h5"
    assert path.exists() and (tmp_path / "out" / "net_10.h5").exists()
    with h5py.File(path) as f:
        assert int(f[f"{STATE}/iteration"][()]) == 20
        assert float(f[f"{STATE}/eta"][()]) == pytest.approx(0.05 * 0.25)
        assert "/processing/znn/train/network/conv1/momentum_vol" in f
        assert list(f["/processing/znn/train/statistics/train/it"][()]) == [5, 10, 15, 20]
        assert list(f["/processing/znn/train/statistics/test/it"][()]) == [10, 20]
    state = read_training_state(path, t.net)
    for name, v in t.opt.velocity.items():
        np.testing.assert_array_equal(state.momenta[name], v)


def test_resume_continues_with_the_same_state(tmp_path):
    cfg = write_run(tmp_path)
    full = trainer(cfg, Max_iter=20)
    full.run()
    # the same run stopped at 10, then resumed by rerunning the command
    other = tmp_path / "other"
    other.mkdir()
    cfg2 = write_run(other)
    first = trainer(cfg2, Max_iter=10)
    first.run()
    lines = []
    second = trainer(cfg2, lines, Max_iter=20)
    assert second.start == 10
    assert second.opt.eta == pytest.approx(first.opt.eta)
    for k, v in first.opt.velocity.items():
        np.testing.assert_array_equal(second.opt.velocity[k], v)
    assert any("resuming from" in line for line in lines)
    second.run()
    assert second.opt.eta == pytest.approx(full.opt.eta)
    assert [r["it"] for r in second.curve.train] == [5, 10, 15, 20]


def test_a_network_with_load_0_layers_resumes_and_runs_forward(tmp_path):
    # VD2D3D's `load 0` layers: skipped when seeding, but loaded on resume and by forward
    net = tmp_path / "net.znn"
    net.write_text((NETWORKS / "tiny2d.znn").read_text().replace(
        "output nconv2\n", "output nconv2\nload 0\n"))
    cfg = write_run(tmp_path, extra=f"fnet_spec = {net}\n")
    cfg.write_text(cfg.read_text().replace(f"fnet_spec = {NETWORKS / 'tiny2d.znn'}\n", ""))
    first = trainer(cfg, Max_iter=10)
    first.run()
    lines = []
    second = trainer(cfg, lines, Max_iter=10)
    assert second.start == 10 and any("resuming from" in line for line in lines)
    for name, p in first.net.parameters().items():
        np.testing.assert_array_equal(second.net.parameters()[name], p)
    result = CliRunner().invoke(cli, ["forward", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "out").glob("pred*.h5"))


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_last_save(tmp_path):
    cfg = write_run(tmp_path, extra="")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [sys.executable, "-m", "znn.cli.main", "train", "-c", str(cfg), "--set",
           "Max_iter=100000", "--set", "Num_iter_per_save=25", "--set", "Num_iter_per_test=1000"]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        saved = tmp_path / "out" / "net_50.h5"
        deadline = time.time() + 120
        while not saved.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert saved.exists(), (tmp_path / "stderr.txt").read_text()
    with h5py.File(tmp_path / "out" / "net_current.h5") as f:
        last = int(f[f"{STATE}/iteration"][()])
        eta = float(f[f"{STATE}/eta"][()])
    assert last >= 50 and last % 25 == 0
    out = subprocess.run(cmd[:-6] + ["--set", f"Max_iter={last + 5}", "--set",
                                     "Num_iter_per_show=5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "resuming from" in out.stdout and f"at iteration {last} (eta {eta:g})" in out.stdout
    assert f"iter {last + 5:>7d}/{last + 5}" in out.stdout


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cfg = write_run(tmp_path)
    t = trainer(cfg, Max_iter=10**6)
    calls = {"n": 0}
    original = t.opt.step

    def step():
        original()
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    t.opt.step = step
    it = t.run()
    assert it == 3
    with h5py.File(tmp_path / "out" / "net_current.h5") as f:
        assert int(f[f"{STATE}/iteration"][()]) == 3


def test_seeding_copies_matching_layers_and_lists_the_rest(tmp_path):
    cfg = write_run(tmp_path)
    src = trainer(cfg, Max_iter=5)
    src.run()
    seed = tmp_path / "out" / "net_current.h5"
    other = tmp_path / "b"
    other.mkdir()
    # same first layers, different last layer name -> not copied
    text = (NETWORKS / "tiny2d.znn").read_text().replace("edges conv3", "edges conv3b")
    (other / "net.znn").write_text(text)
    cfg2 = write_run(other, extra=f"fnet_spec = {other / 'net.znn'}\n")
    cfg2.write_text(cfg2.read_text().replace(f"fnet_spec = {NETWORKS / 'tiny2d.znn'}\n", ""))
    lines = []
    t = Trainer(read_config(cfg2), seed_net=seed, log=lines.append)
    np.testing.assert_array_equal(t.net.parameters()["conv1"], src.net.parameters()["conv1"])
    assert not np.array_equal(t.net.parameters()["conv3b"], src.net.parameters()["conv3"])
    text = "\n".join(lines)
    assert "conv3b" in text and "not in the seed" in text and "conv3" in text
    assert t.start == 0


def test_mismatched_output_function_and_cost_is_a_clear_error(tmp_path):
    cfg = write_run(tmp_path, extra="cost_fn = binomial_cross_entropy\n")
    with pytest.raises(SpecError, match="forward_logistics"):
        trainer(cfg)


def test_malis_on_a_boundary_network_is_a_clear_error(tmp_path):
    cfg = write_run(tmp_path, extra="is_malis = yes\n")
    with pytest.raises(SpecError, match="is_malis"):
        trainer(cfg)


def test_affinity_training_with_malis_runs(tmp_path):
    _, boundary = synthetic_stack()
    from scipy import ndimage

    seg = np.zeros(boundary.shape, np.uint32)
    for z in range(seg.shape[0]):
        seg[z] = ndimage.label(boundary[z] > 0)[0]
    net = tmp_path / "aff.znn"
    net.write_text((NETWORKS / "tiny2d.znn").read_text().replace(
        "function linear\nsize 2", "function forward_logistics\nsize 3"))
    cfg = write_run(tmp_path, out_type="affinity", label=seg,
                    extra=f"fnet_spec = {net}\nis_malis = yes\nmalis_norm_type = frac\n")
    cfg.write_text(cfg.read_text().replace(f"fnet_spec = {NETWORKS / 'tiny2d.znn'}\n", ""))
    t = trainer(cfg, Max_iter=10)
    t.run()
    row = t.curve.train[-1]
    assert {"re", "mc", "me"} <= set(row)
    assert np.isfinite(row["err"])


def test_volume_smaller_than_the_patch_is_an_error_before_training(tmp_path):
    cfg = write_run(tmp_path, shape=(2, 10, 10), extra="is_bd_mirror = no\n")
    with pytest.raises(DataError):
        trainer(cfg)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    cfg = write_run(tmp_path, extra="eta = fast\n")
    result = CliRunner().invoke(cli, ["train", "-c", str(cfg)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "run.cfg" in lines[0] and "eta" in lines[0]
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["train", "-c", str(tmp_path / "nope.cfg")])
    assert missing.exit_code == 1 and "nope.cfg" in missing.output


def test_docs_example_config_runs_with_only_paths_changed(tmp_path):
    """The configuration layout of the ZNN docs (legacy train_net key, forward keys, ...)."""
    image, label = synthetic_stack()
    import tifffile

    tifffile.imwrite(tmp_path / "train-volume.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", label, photometric="minisblack")
    (tmp_path / "dataset.spec").write_text(
        "[image1]\nfnames = train-volume.tif\npp_types = standard2D\nis_auto_crop = yes\n\n"
        "[label1]\nfnames = train-labels.tif\npp_types = auto\nis_auto_crop = yes\n"
        "fmasks =\n\n[sample1]\ninput = 1\noutput = 1\n")
    (tmp_path / "config.cfg").write_text(f"""[parameters]
fnet_spec = {NETWORKS / 'tiny2d.znn'}
fdata_spec = dataset.spec
num_threads = 0
dtype = float32
out_type = boundary
logging = no
train_outsz = 1,10,10
cost_fn = auto
eta = 0.01
anneal_factor = 0.997
momentum = 0.9
weight_decay = 0
Num_iter_per_annealing = 100
train_net = experiments/net.h5
train_range = 1
test_range = 1
train_conv_mode = fft
is_data_aug = yes
is_bd_mirror = yes
rebalance_mode = none
is_malis = no
malis_norm_type = none
Num_iter_per_show = 5
Num_iter_per_test = 10
test_num = 2
Num_iter_per_save = 10
Max_iter = 10
forward_range = 1
forward_net = experiments/net_current.h5
forward_conv_mode = fft
forward_outsz = 1,30,30
output_prefix = experiments/out
is_stdio = yes
is_debug = no
is_check = no
""")
    (tmp_path / "experiments").mkdir()
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "-c", str(tmp_path / "config.cfg")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["forward", "-c", str(tmp_path / "config.cfg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "experiments" / "out_sample1_output.h5").exists()


def test_one_class_labels_train_a_single_output(tmp_path):
    net = tmp_path / "one.znn"
    net.write_text((NETWORKS / "tiny2d.znn").read_text().replace(
        "function linear\nsize 2", "function forward_logistics\nsize 1"))
    cfg = write_run(tmp_path, extra=f"fnet_spec = {net}\ncost_fn = binomial_cross_entropy\n")
    cfg.write_text(cfg.read_text().replace(f"fnet_spec = {NETWORKS / 'tiny2d.znn'}\n", "")
                   .replace("binary_class", "one_class"))
    (tmp_path / "data.spec").write_text((tmp_path / "data.spec").read_text()
                                        .replace("binary_class", "one_class"))
    t = trainer(cfg, Max_iter=5)
    _, labels, masks, _ = t.train_data.sample()
    assert labels["output"].shape == (1, 1, 12, 12) and masks["output"].shape == (1, 1, 12, 12)
    t.run()
    # the same labels with a softmax cost, or a 2-channel network, are clear errors
    with pytest.raises(SpecError, match="softmax"):
        trainer(cfg, cost_fn="softmax_loss", Max_iter=5)
    (tmp_path / "data.spec").write_text((tmp_path / "data.spec").read_text()
                                        .replace("one_class", "binary_class"))
    with pytest.raises(SpecError, match="2 output channel"):
        trainer(cfg, Max_iter=5)
