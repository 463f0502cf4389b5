"""Training checkpoints: network + momentum + iteration + learning rate + learning curve in one .h5."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

STATE = "/processing/znn/train/state"
STATS = "/processing/znn/train/statistics"
TRAIN_KEYS = ("it", "err", "cls", "re", "mc", "me", "elapsed", "eta")
TEST_KEYS = ("it", "err", "cls", "re", "mc", "me")


@dataclass
class LearningCurve:
    """Train and test records (one dict per shown/tested iteration)."""

    train: list = field(default_factory=list)
    test: list = field(default_factory=list)

    def crop(self, iteration):
        """Drop records after `iteration` (resuming from an older checkpoint)."""
        self.train = [r for r in self.train if r["it"] <= iteration]
        self.test = [r for r in self.test if r["it"] <= iteration]

    def datasets(self):
        """{absolute dataset path: array} in the original's statistics layout (§4.9)."""
        out = {}
        for part, keys, rows in (("train", TRAIN_KEYS, self.train), ("test", TEST_KEYS, self.test)):
            for key in keys:
                values = [r.get(key, np.nan) for r in rows]
                dtype = np.int64 if key == "it" else np.float64
                out[f"{STATS}/{part}/{key}"] = np.asarray(values, dtype=dtype)
        return out

    @classmethod
    def from_file(cls, f):
        curve = cls()
        for part, keys in (("train", TRAIN_KEYS), ("test", TEST_KEYS)):
            if f"{STATS}/{part}/it" not in f:
                continue
            cols = {k: f[f"{STATS}/{part}/{k}"][()] for k in keys if f"{STATS}/{part}/{k}" in f}
            rows = [{k: (int(v[i]) if k == "it" else float(v[i])) for k, v in cols.items()}
                    for i in range(len(cols["it"]))]
            setattr(curve, part, rows)
        return curve

    def write_csv(self, path):
        """One row per record: part, it, err, cls, re, mc, me, elapsed, eta (atomic)."""
        tmp = _tmp(path)
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["part", *TRAIN_KEYS])
            for part, rows in (("train", self.train), ("test", self.test)):
                for r in rows:
                    w.writerow([part] + [_fmt(r.get(k)) for k in TRAIN_KEYS])
        os.replace(tmp, path)

    def write_png(self, path):
        """Cost and pixel error against iteration, train and test (atomic; needs matplotlib)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, title in ((axes[0], "err", "cost"), (axes[1], "cls", "pixel error")):
            for part, rows, style in (("train", self.train, "-"), ("test", self.test, "o-")):
                if rows:
                    ax.plot([r["it"] for r in rows], [r.get(key, np.nan) for r in rows], style,
                            label=part, markersize=3)
            ax.set_xlabel("iteration")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if self.train or self.test:
                ax.legend()
        fig.tight_layout()
        tmp = _tmp(path)
        fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        os.replace(tmp, path)


def _fmt(v):
    if v is None:
        return ""
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def _tmp(path):
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def save_checkpoint(path, net, optimizer, curve, *, seed=None):
    """Write network, momentum volumes, iteration, eta and curve to `path` atomically."""
    extra = {f"{STATE}/iteration": np.int64(optimizer.iteration),
             f"{STATE}/eta": np.float64(optimizer.eta),
             f"{STATE}/momentum": np.float64(optimizer.momentum),
             f"{STATE}/weight_decay": np.float64(optimizer.weight_decay),
             f"{STATE}/seed": np.int64(-1 if seed is None else seed)}
    extra.update(curve.datasets())
    net.save(path, momenta=optimizer.velocity, extra=extra)


@dataclass
class TrainingState:
    iteration: int
    eta: float | None
    curve: LearningCurve
    momenta: dict
    seed: int | None


def read_training_state(path, net):
    """Iteration, eta, curve and momentum volumes saved with a network (znn or original ZNN).

    Networks saved by the original ZNN have no state group: the iteration then comes from
    the file name (`net_1200.h5`), eta is None (use the configured one), and the curve is
    read from the original's statistics datasets when present.
    """
    from znn.formats.network_h5 import read_network_h5

    path = Path(path)
    with h5py.File(path, "r") as f:
        curve = LearningCurve.from_file(f)
        if f"{STATE}/iteration" in f:
            iteration = int(f[f"{STATE}/iteration"][()])
            eta = float(f[f"{STATE}/eta"][()])
            seed = int(f[f"{STATE}/seed"][()])
            seed = None if seed < 0 else seed
        else:
            tail = path.stem.rsplit("_", 1)[-1]
            iteration = int(tail) if tail.isdigit() else (
                max([r["it"] for r in curve.train + curve.test], default=0))
            eta, seed = None, None
    curve.crop(iteration)
    params = net.parameters()
    momenta = {name: layer.momentum for name, layer in read_network_h5(path).items()
               if layer.momentum is not None and name in params
               and np.shape(layer.momentum) == params[name].shape}
    return TrainingState(iteration, eta, curve, momenta, seed)
