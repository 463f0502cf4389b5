"""The training loop of `znn train`: sampling, cost, SGD, tests, checkpoints, resume."""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from znn import losses, malis
from znn.checkpoint import LearningCurve, read_training_state, save_checkpoint
from znn.errors import DataError, SpecError
from znn.formats.dataset_file import read_dataset_spec
from znn.formats.network_file import read_network
from znn.net.graph import Network
from znn.optim import SGD

@dataclass
class Totals:
    """Running sums between two shows (or over one test)."""

    err: float = 0.0
    cls: float = 0.0
    voxels: float = 0.0
    re: list = field(default_factory=list)
    mc: list = field(default_factory=list)
    me: list = field(default_factory=list)
    n: int = 0
    seconds: float = 0.0

    def record(self, it, eta=None):
        v = max(self.voxels, 1.0)
        row = {"it": it, "err": self.err / v, "cls": self.cls / v}
        for key in ("re", "mc", "me"):
            values = getattr(self, key)
            if values:
                row[key] = float(np.mean(values))
        if self.n:
            row["elapsed"] = self.seconds / self.n
        if eta is not None:
            row["eta"] = eta
        return row


class Interrupted(Exception):
    pass


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Trainer:
    """Train the network of a RunConfig; `run()` does the whole job.

    seed_net: optional .h5 (znn's or the original ZNN's) whose matching layers seed the new
    network (transfer learning); without it a run resumes from {train_net_prefix}_current.h5
    when that exists.  log: a callable taking one line.
    """

    def __init__(self, cfg, *, seed_net=None, log=print):
        cfg.require("train_net_prefix", "fdata_spec", "train_range")
        self.cfg, self.log = cfg, log
        self.prefix = Path(cfg.train_net_prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.seed = cfg.seed
        spec = read_network(cfg.fnet_spec)
        mode = cfg.train_conv_mode
        self.net = Network(spec, cfg.train_outsz, dtype=cfg.dtype,
                           conv_mode="fft" if mode == "optimize" else mode,
                           num_threads=cfg.num_threads, seed=self.seed, phase="train")
        self._check_functions()
        self.loss = losses.get_loss(cfg.cost_fn)
        self.opt = SGD(self.net, cfg.train_outsz, cfg.eta, cfg.momentum, cfg.weight_decay)
        self.curve = LearningCurve()
        self.start = 0
        self._restore(seed_net)
        if mode == "optimize":  # saved plan (znn optimize-conv) or timed now; memory-bounded
            from znn.net.conv_plan import default_budget, plan_network

            plan_network(self.net, cfg.fnet_spec, training=True, budget=default_budget(),
                         log=self.log)
        rng_seed = [self.seed if self.seed is not None else np.random.SeedSequence().entropy,
                    self.start]
        self.rng = np.random.default_rng(rng_seed)
        self.net.rng = np.random.default_rng(rng_seed + [1])
        dspec = read_dataset_spec(cfg.fdata_spec)
        cfg.check_samples(dspec, "train_range", "test_range")
        geometry = dict(input_fov=self.net.fovs, input_size=self.net.input_sizes,
                        output_size={o: self.net.output_size for o in self.net.outputs},
                        out_type=cfg.out_type, dtype=self.net.dtype,
                        is_bd_mirror=cfg.is_bd_mirror)
        from znn.data.sampler import PatchSampler

        self.train_data = PatchSampler(dspec, cfg.train_range, rebalance_mode=cfg.rebalance_mode,
                                       is_data_aug=cfg.is_data_aug, rng=self.rng, **geometry)
        self._check_channels(self.train_data)
        self.test_data = None
        if cfg.test_range:
            self.test_data = PatchSampler(dspec, cfg.test_range, rng=np.random.default_rng(
                [rng_seed[0], 7]), **geometry)

    # -- set-up -------------------------------------------------------------------------------
    def _check_channels(self, sampler):
        cfg = self.cfg
        for name in self.net.outputs:
            want, have = sampler.label_channels[name], self.net.nodes[name].n
            if have != want:
                what = "one_class labels" if want == 1 else f"out_type {cfg.out_type}"
                raise SpecError(f"{what} need {want} output channel(s) but node group '{name}' "
                                f"of {cfg.fnet_spec} has {have}",
                                path=cfg.path, line=cfg.lines.get("out_type"), key="out_type")
            if want == 1 and cfg.cost_fn == "softmax_loss":
                raise SpecError("one_class labels have one channel, where a softmax is constant: "
                                "use cost_fn binomial_cross_entropy (forward_logistics output) "
                                "or square_loss", path=cfg.path, line=cfg.lines.get("cost_fn"),
                                key="cost_fn")

    def _check_functions(self):
        cfg = self.cfg
        where = dict(path=cfg.path, line=cfg.lines.get("cost_fn"), key="cost_fn")
        for name in self.net.outputs:
            node = self.net.nodes[name]
            problem = losses.check_output_function(cfg.cost_fn, node.spec.function)
            if problem:
                raise SpecError(f"{problem} (output node group '{name}' of {cfg.fnet_spec})",
                                **where)
        if cfg.is_malis and cfg.out_type != "affinity":
            raise SpecError("is_malis needs an affinity network (out_type affinity, 3 output "
                            "channels); MALIS is not defined for boundary maps",
                            path=cfg.path, line=cfg.lines.get("is_malis"), key="is_malis")

    def _restore(self, seed_net):
        current = Path(f"{self.prefix}_current.h5")
        if seed_net is not None:
            seed_net = Path(seed_net)
            if not seed_net.exists():
                raise DataError(f"seed network {seed_net} does not exist")
            copied, missing, unused = self.net.load_weights(seed_net, strict=False)
            self.log(f"seeded {len(copied)} layer(s) from {seed_net}")
            if missing:
                self.log(f"  not in the seed (kept their initial values): {', '.join(missing)}")
            if unused:
                self.log(f"  in the seed but not in this network: {', '.join(unused)}")
            return
        if not current.exists():
            return
        self.net.load_weights(current, strict=True)
        state = read_training_state(current, self.net)
        self.start = state.iteration
        self.curve = state.curve
        if state.eta is not None:
            self.opt.eta = state.eta
        if state.seed is not None and self.seed is None:
            self.seed = state.seed
        self.opt.iteration = state.iteration
        self.opt.load_state_dict({"velocity": state.momenta})
        self.log(f"resuming from {current} at iteration {self.start} (eta {self.opt.eta:g})")

    # -- one patch ----------------------------------------------------------------------------
    def _evaluate(self, batch, totals, *, train):
        """Forward one patch, add its cost to totals; returns output gradients (train)."""
        inputs, labels, masks, weights = batch
        props = self.net.forward(inputs, keep_state=train)
        grads = {}
        for name, p in props.items():
            lbl, mask = labels[name], masks.get(name) if train else None
            out, err, g = self.loss(p, lbl, mask)
            totals.err += err
            totals.cls += losses.pixel_error(out, lbl, mask)
            totals.voxels += float(np.sum(mask)) if mask is not None else out.size
            if self.cfg.out_type == "affinity":
                totals.re.append(malis.rand_error(out, lbl))
            if not train:
                continue
            if self.cfg.rebalance_mode != "none":
                g = g * weights[name]
            if self.cfg.is_malis:
                w, stats = malis.malis_gradient_weights(out, lbl, self.cfg.malis_norm_type,
                                                        self.cfg.is_constrained_malis)
                if stats["n"] <= 1:
                    return None  # no labelled pair: nothing to learn from this patch
                g = g * w
                mc, me = malis.malis_cost(out, lbl, w)
                totals.mc.append(mc)
                totals.me.append(me)
            grads[name] = np.ascontiguousarray(g, dtype=self.net.dtype)
        return grads

    def _test(self, it):
        totals = Totals()
        self.net.phase = "test"
        try:
            for _ in range(self.cfg.test_num):
                self._evaluate(self.test_data.sample(), totals, train=False)
        finally:
            self.net.phase = "train"
        row = totals.record(it)
        self.curve.test.append(row)
        extra = f", rand error {row['re']:.4f}" if "re" in row else ""
        self.log(f"test  {it:>7d}  cost {row['err']:.4f}  pixel error {row['cls']:.4f}{extra}")

    # -- saving -------------------------------------------------------------------------------
    def save(self, it, *, final=False, name=None):
        path = Path(name or f"{self.prefix}_{it}.h5")
        save_checkpoint(path, self.net, self.opt, self.curve, seed=self.seed)
        if name is None:
            save_checkpoint(Path(f"{self.prefix}_current.h5"), self.net, self.opt, self.curve,
                            seed=self.seed)
        self.curve.write_csv(Path(f"{self.prefix}_curve.csv"))
        try:
            self.curve.write_png(Path(f"{self.prefix}_curve.png"))
        except ImportError:
            pass
        return path

    # -- the loop -----------------------------------------------------------------------------
    def run(self):
        cfg = self.cfg
        if self.start >= cfg.max_iter:
            self.log(f"nothing to do: already at iteration {self.start} of Max_iter "
                     f"{cfg.max_iter}")
            return self.start
        stop = {"signal": None}

        def handler(signum, _frame):
            stop["signal"] = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        totals, t_run, it = Totals(), time.perf_counter(), self.start
        try:
            it = self._loop(totals, stop, t_run)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return it

    def _loop(self, totals, stop, t_run):
        cfg, it = self.cfg, self.start
        done_here = skipped = 0
        while it < cfg.max_iter:
            t0 = time.perf_counter()
            grads = self._evaluate(self.train_data.sample(), totals, train=True)
            if grads is None:
                skipped += 1
                if skipped >= 1000:
                    raise DataError("1000 patches in a row had at most one labelled voxel: "
                                    "MALIS has nothing to learn from these labels")
                continue
            skipped = 0
            it += 1
            if not math.isfinite(totals.err):
                path = self.save(it, name=f"{self.prefix}_{it}_nonfinite.h5")
                raise DataError(f"the cost became {totals.err} at iteration {it}: training "
                                f"diverged (lower eta?); state saved to {path}, the last good "
                                f"checkpoint is {self.prefix}_current.h5")
            self.net.backward(grads)
            self.opt.step()
            self.net.apply_constraints()
            totals.n += 1
            totals.seconds += time.perf_counter() - t0
            done_here += 1
            if it % cfg.num_iter_per_show == 0 or it == cfg.max_iter:
                self._show(it, totals, done_here, t_run)
                totals = Totals()
            if self.test_data is not None and it % cfg.num_iter_per_test == 0:
                self._test(it)
            if it % cfg.num_iter_per_save == 0 and it != cfg.max_iter:
                self.save(it)
            self.opt.anneal(it, cfg.num_iter_per_annealing, cfg.anneal_factor)
            if stop["signal"] is not None:
                path = self.save(it)
                name = signal.Signals(stop["signal"]).name
                self.log(f"{name} at iteration {it}: saved {path}; run the same command to "
                         f"resume")
                return it
        path = self.save(it)
        self.log(f"done: {it} iterations; saved {path} and {self.prefix}_current.h5")
        return it

    def _show(self, it, totals, done_here, t_run):
        row = totals.record(it, self.opt.eta)
        self.curve.train.append(row)
        per = (time.perf_counter() - t_run) / max(done_here, 1)
        eta_left = per * (self.cfg.max_iter - it)
        parts = [f"iter {it:>7d}/{self.cfg.max_iter}", f"cost {row['err']:.4f}",
                 f"pixel error {row['cls']:.4f}"]
        if "re" in row:
            parts.append(f"rand error {row['re']:.4f}")
        if "mc" in row:
            parts += [f"malis cls {row['mc']:.4f}", f"malis cost {row['me']:.4f}"]
        parts += [f"{row.get('elapsed', 0):.3f} s/iter", f"eta {self.opt.eta:.5g}",
                  f"ETA {_fmt_time(eta_left)}"]
        self.log("  ".join(parts))
