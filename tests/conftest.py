"""Shared fixtures: small synthetic EM-like volumes and run configurations."""
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"


def synthetic_stack(shape=(4, 48, 48), seed=0):
    """Image with dark 'membranes' on a grid of cells, and its boundary label (255 inside)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    wall = ((y % 12) < 2) | ((x % 14) < 2)
    image = np.where(wall, 60, 190) + rng.normal(0, 12, shape)
    label = np.where(wall, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_run(folder, *, net="tiny2d.znn", extra="", spec_extra="", shape=(4, 48, 48),
              out_type="boundary", label=None):
    """Write image/label tifs, a .spec and a .cfg into folder; returns the cfg path."""
    folder = Path(folder)
    image, boundary = synthetic_stack(shape)
    tifffile.imwrite(folder / "image.tif", image, photometric="minisblack")
    tifffile.imwrite(folder / "label.tif", boundary if label is None else label,
                     photometric="minisblack")
    (folder / "data.spec").write_text(
        "[image1]\nfnames = image.tif\npp_types = standard2D\nis_auto_crop = no\n\n"
        "[label1]\nfnames = label.tif\npp_types = binary_class\nis_auto_crop = no\n\n"
        "[sample1]\ninput = 1\noutput = 1\n" + spec_extra)
    cfg = folder / "run.cfg"
    cfg.write_text(
        "[parameters]\n"
        f"fnet_spec = {NETWORKS / net}\n"
        "fdata_spec = data.spec\n"
        "num_threads = 0\ndtype = float32\n"
        f"out_type = {out_type}\n"
        "train_net_prefix = out/net\ntrain_range = 1\ntest_range = 1\n"
        "train_outsz = 1,12,12\ntrain_conv_mode = fft\n"
        "eta = 0.05\nmomentum = 0.9\nanneal_factor = 0.5\nNum_iter_per_annealing = 7\n"
        "Num_iter_per_show = 5\nNum_iter_per_test = 10\ntest_num = 2\n"
        "Num_iter_per_save = 10\nMax_iter = 20\nseed = 3\n"
        "forward_range = 1\nforward_net = out/net_current.h5\nforward_outsz = 1,20,20\n"
        "output_prefix = out/pred\nforward_conv_mode = fft\n" + extra)
    (folder / "out").mkdir(exist_ok=True)
    return cfg


@pytest.fixture
def run_cfg(tmp_path):
    return write_run(tmp_path)
