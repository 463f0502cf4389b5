"""Choose FFT or direct convolution per conv layer by timing both on the layer's real shapes."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from znn import kernels as K
from znn.net import plan_store
from znn.net.memory import estimate_bytes, human, net_threads

NO_PLAN = "timing conv layers (no saved plan; `znn optimize-conv` makes one ahead of time)"


# best_times: candidates this many times slower than the fastest are not timed again, after
# their first (warm-up) call and after a timed round
FIRST_CALL_ABOVE, PRUNE_ABOVE = 2.5, 1.5
# time_layer: direct candidates of a layer with an output axis of at least SLAB_MIN points
# are first run on 1/SLAB_PARTS of that axis; see best_times' `estimates`.  The GEMM
# lowering is first run on 1/THIN_PARTS when that axis has THIN_MIN points: its estimate
# from so thin a slab was 0.90-1.13x the whole pass on the 13 layers measured (the Winograd
# tiles' ran up to 3x their 1/SLAB_PARTS estimate and 4.8x the whole pass, so they skip it),
# and a THIN_MARGIN times hopeless estimate ends there (a 7x7x7 layer's 1/8 slab alone took
# 3.6 s)
SLAB_MIN, SLAB_PARTS = 32, 8
THIN_MIN, THIN_PARTS, THIN_MARGIN = 128, 32, 1.5
# best_times: once the other candidates are dropped, a survivor whose timed pass took at
# least SETTLED seconds is not timed again (its later passes would change no choice)
SETTLED = 0.25
# best_times: after the rounds, the candidates within CLOSE of the fastest (two or more)
# whose passes are shorter than SETTLED get up to CLOSE_ROUNDS more rounds: a slow spell of
# the host over both of a candidate's timed passes had made net3d_3's 32->32 3x3x3 layer
# (16x32x32 output) take 8-point tiles at 180 ms, against 156-160 ms with 6-point tiles in
# three later plans of that layer.  (Longer passes are left as they are: a 3D forward plan
# has several close candidates of 0.7 s per layer, and its time is already a minute.)
CLOSE, CLOSE_ROUNDS = 1.2, 2
# time_layer (training): a layer's passes run different direct methods when that mix takes
# at most 1 / MIX_GAIN of the best single method's time (at 1.03, VD2D3D's two identical
# 24->24 2x2 layers came out one mixed and one not: the host's noise)
MIX_GAIN = 1.06


def best_times(fns, repeats=2, warmup=1, prune_above=None, first_call_above=None,
               first_only=None, estimates=None, estimated=None):
    """Best wall time of each function in `fns` over `repeats` rounds, after `warmup` rounds.

    A round calls every function once, in turn, so a slow spell of a shared machine (other
    tenants' memory traffic, a busy sibling core) falls on all candidates alike instead of
    on whichever was being timed alone at that moment.

    Clear losers are dropped, as they took most of a plan's time (3D Winograd tiles, FFT
    against direct for small 2D kernels): a candidate whose first call took more than
    `first_call_above` times the fastest first call is not called again (its time is that
    call, which pays the one-time costs too, and its index is added to the set
    `first_only`), and after each timed round a candidate whose best is more than
    `prune_above` times the fastest is not called again (its time is still a timed pass).
    None: FIRST_CALL_ABOVE / PRUNE_ABOVE; inf: no pruning.  A dropped candidate could have
    been the choice only if its repeats beat its first time by 60% or a third.

    `estimates` (a list like fns, of None or a callable returning an estimate of one call's
    seconds, cheaper than the call) keeps the first call of a hopeless candidate from
    costing its full time: the candidates without an estimate make their first calls, then
    a candidate whose estimate exceeds `first_call_above` times the fastest of those calls
    is not called at all (its time is the estimate, its index is added to `estimated`).  The
    callable is given that limit (seconds), so it may stop at a rough estimate well above it.

    Once a timed round leaves one candidate (the rest dropped, or it was alone) and its best
    pass took SETTLED seconds or more, the rounds end: no choice depends on its later passes.
    Then, while two or more candidates are within CLOSE of the fastest and took less than
    SETTLED seconds, those get another round, CLOSE_ROUNDS at most.
    """
    prune_above = PRUNE_ABOVE if prune_above is None else prune_above
    first_call_above = FIRST_CALL_ABOVE if first_call_above is None else first_call_above
    best = [float("inf")] * len(fns)
    live = list(range(len(fns)))
    for w in range(warmup):
        if w > 0 or repeats == 0:
            for i in live:
                fns[i]()
            continue
        probe = [i for i in live if estimates and estimates[i] is not None]
        if len(probe) == len(live):  # nothing measured to hold the estimates against
            probe = []
        first = {i: _timed(fns[i]) for i in live if i not in probe}
        for i in probe:
            limit = first_call_above * min(first.values())
            est = estimates[i](limit)
            if est > limit:
                best[i] = est
                if estimated is not None:
                    estimated.add(i)
            else:
                first[i] = _timed(fns[i])
        cut = first_call_above * min(first.values())
        dropped = [i for i, t in first.items() if t > cut]
        for i in dropped:
            best[i] = first[i]
        live = [i for i in live if i in first and i not in dropped]
        if first_only is not None:
            first_only.update(dropped)
    for _ in range(repeats):
        for i in live:
            best[i] = min(best[i], _timed(fns[i]))
        cut = prune_above * min(best[i] for i in live)
        live = [i for i in live if best[i] <= cut]
        if len(live) == 1 and best[live[0]] >= SETTLED:
            break
    for _ in range(CLOSE_ROUNDS if repeats else 0):
        close = [i for i in live
                 if best[i] <= CLOSE * min(best[j] for j in live) and best[i] < SETTLED]
        if len(close) < 2:
            break
        for i in close:
            best[i] = min(best[i], _timed(fns[i]))
        live = close
    return best


def _timed(fn):
    """Seconds of one call of fn."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_time(fn, repeats=2, warmup=1):
    """Best wall time of `repeats` calls of fn after `warmup` calls (plans, page faults)."""
    return best_times([fn], repeats, warmup)[0]


def direct_slab(edge, x, g, parts=SLAB_PARTS, min_points=SLAB_MIN):
    """(x slab, g slab, axis, n, s) for slab_estimate: the first s = n/parts points of the
    layer's longer output axis of z and y (n points), with the inputs they read; None when
    that axis has fewer than `min_points` points.  g may be None (forward passes only)."""
    e, out = edge, tuple(edge.dst.size)
    axis = 1 if out[1] >= out[0] else 0
    n = out[axis]
    if n < min_points:
        return None
    s = -(-n // parts)
    span = s + (e.ksize[axis] - 1) * e.dilation[axis]
    lead = (slice(None),) * (axis + 1)
    return (np.ascontiguousarray(x[lead + (slice(0, span),)]),
            None if g is None else np.ascontiguousarray(g[lead + (slice(0, s),)]), axis, n, s)


def _wino_tiles(n, d, m):
    """Winograd tiles of an axis of n outputs with dilation d and m outputs per tile."""
    return sum(-(-((n - r + d - 1) // d) // m) for r in range(min(d, n)))


def slab_scale(edge, axis, n, s, points):
    """The factor from a slab's direct work (s of the n points of `axis`) to the whole
    layer's: n / s for the GEMM lowering, whose work follows the output.  Winograd tiles
    (points > 0) waste more of a thin slab (a dilated slab's classes are shorter than a
    tile; z taps transform span source slices more), so their factor is the least of n / s
    and the ratios of tiles (y: of the output and of the input gradient) or of source slices
    (z): an estimate from it errs low, and a candidate it puts out of the running is."""
    if not points:
        return n / s
    k, d = edge.ksize[axis], edge.dilation[axis]
    span = (k - 1) * d
    if axis == 0:
        return min(n / s, (n + span) / (s + span))
    m = points + 1 - k
    return min(n / s, _wino_tiles(n, d, m) / _wino_tiles(s, d, m),
               _wino_tiles(n + span, d, m) / _wino_tiles(s + span, d, m))


def slab_estimate(edge, slab, points, training, thin=None):
    """A callable estimate(limit=inf) of the seconds of one direct pass of `edge` (Winograd
    `points`, 0 for the GEMM lowering) from a pass over the slab of direct_slab, scaled by
    slab_scale.  With a `thin` slab (used for the GEMM lowering only), a pass over it comes
    first, and an estimate from it above THIN_MARGIN * limit is returned as it is."""
    e = edge

    def run(xs, gs, axis, n, s):
        t0 = time.perf_counter()
        K.conv_forward(xs, e.filters, e.dilation, nthreads=e.threads, winograd=points)
        if training:
            K.conv_backward_weight(xs, gs, e.dilation, nthreads=e.threads, winograd=points)
            if e.src.needs_grad:
                K.conv_backward_data(gs, e.filters, e.dilation, xs.shape[1:],
                                     nthreads=e.threads, winograd=points)
        return (time.perf_counter() - t0) * slab_scale(e, axis, n, s, points)

    def estimate(limit=float("inf")):
        if thin is not None and points == 0:
            rough = run(*thin)
            if rough > THIN_MARGIN * limit:
                return rough
        return run(*slab)
    return estimate


def fft_pass(e, x, g, training):
    """One FFT pass of conv edge `e` on input x (and output gradient g), as a training step
    runs it (training: forward and backward, kernel spectra made anew, as after every
    update) or as inference does (forward only, kernel spectra kept)."""
    if not training:
        e.forward_fft(x)
        return
    e.invalidate_spectra()
    xf = e.input_spectrum(x)
    e.output_from_spectrum(e.forward_spectral(xf, None))
    dxf = e.backward_spectral(xf, e.grad_spectrum(g), None)
    if e.src.needs_grad:
        e.input_grad_from_spectrum(dxf)


def time_layer(edge, training=True, repeats=2, rng=None, fft=True):
    """Seconds per pass of one conv edge in each mode: {'fft': s, 'direct': s}.

    Direct mode is timed with the GEMM lowering and, for kernels with Winograd tiles, with
    each tile size; the fastest is kept ('winograd': its points, 0 for GEMM).  Every
    candidate (each FFT engine, each direct kernel) is timed in the same rounds (best_times).

    Drives the edge's own methods, so it times whatever engine the network runs.
    training=True times forward + backward (weight gradient, and the input gradient when
    the input node needs one) with the kernel spectra recomputed every pass, as after every
    update; False times the forward pass only, with the kernel spectra cached as during
    inference.  fft=False skips the FFT timing ('fft': None).  'first_call' lists the modes
    whose time is of a first call only (see best_times: they were far behind), 'estimated'
    those whose time is an estimate from a slab of the output (direct_slab), as they were
    so far behind the FFT's first call that they were never run whole.
    The edge's mode, gradient and filters are unchanged afterwards and its per-pass state
    and kernel spectra are released.
    """
    e = edge
    rng = rng or np.random.default_rng(0)
    # uniform values (no subnormals): the kernels' times do not depend on them, and drawing
    # normal float64 values then converting took 4 s per 92M-value input of net3d_7
    x = rng.random((e.src.n,) + tuple(e.src.size), dtype=e.net.dtype)
    g = rng.random((e.dst.n,) + tuple(e.dst.size), dtype=e.net.dtype) if training else None
    saved_mode, saved_grad = e.mode, e.grad.copy()
    passes = {}  # direct candidate -> best seconds of its forward, backward-data, weight passes

    def direct_pass(k):
        t0 = time.perf_counter()
        e.forward(x)
        ts = [time.perf_counter() - t0]
        if training:
            t0 = time.perf_counter()
            e.backward_weight(g)
            t1 = time.perf_counter()
            if e.src.needs_grad:
                e.backward_data(g)
            ts += [time.perf_counter() - t1, t1 - t0]
        passes[k] = [min(a, b) for a, b in zip(passes.get(k, ts), ts)]

    saved_engine, saved_winograd = e.fft_engine, e.winograd
    saved_back = e.winograd_data, e.winograd_weight
    e.winograd_data = e.winograd_weight = None  # every pass of a candidate runs its points
    # candidates as (mode, fft engine, Winograd points); all are timed round by round
    configs = []
    if fft:  # forward-only passes have two FFT engines, both timed
        engines = [None] if training else ["whole"] + (["blocked"] if e.blocked_possible
                                                        else [])
        configs += [("fft", engine, saved_winograd) for engine in engines]
    configs += [("direct", saved_engine, points) for points in
                (0,) + (K.WINOGRAD_POINTS if K.winograd_fits(e.ksize) else ())]

    def run(k, config):
        def call():
            e.mode, e.fft_engine, e.winograd = config
            fft_pass(e, x, g, training) if config[0] == "fft" else direct_pass(k)
        return call
    try:
        times, first_only, estimated, winner = {"fft": None, "direct": None}, set(), set(), {}
        slab = direct_slab(e, x, g) if fft else None  # one slab, shared by the candidates
        thin = direct_slab(e, x, g, THIN_PARTS, THIN_MIN) if slab is not None else None
        estimates = [None if mode == "fft" or slab is None
                     else slab_estimate(e, slab, points, training, thin)
                     for mode, _, points in configs]
        got = best_times([run(k, c) for k, c in enumerate(configs)], repeats,
                         first_only=first_only, estimates=estimates, estimated=estimated)
        for k, ((mode, engine, points), t) in enumerate(zip(configs, got)):
            if times[mode] is not None and t >= times[mode]:
                continue
            times[mode], winner[mode] = t, k
            if mode == "direct":
                times["winograd"] = points
            elif engine is not None:
                times["fft_engine"] = engine
        times["first_call"] = [m for m, k in winner.items() if k in first_only]
        times["estimated"] = [m for m, k in winner.items() if k in estimated]
        times.update(_mixed_passes(passes, configs, times))
        return times
    finally:
        e.grad[...] = saved_grad  # in place: optimizers hold this array
        e.mode, e.fft_engine, e.winograd = saved_mode, saved_engine, saved_winograd
        e.winograd_data, e.winograd_weight = saved_back
        e.release()
        e.invalidate_spectra()  # timing must not leave every layer's spectra in memory


def _mixed_passes(passes, configs, times):
    """The direct candidates' best pass times put together pass by pass (training): on small
    patches the fastest method can differ between a layer's passes (N4's 48->200 3x3 layer
    dilated by 16 at a 64x64 output, one core: forward 6.8 ms with 6-point tiles against
    11.5 ms with the GEMM lowering, backward data 15.6 ms against 9.9 ms).  Returns updates for
    time_layer's times: the forward's points as 'winograd', and 'winograd_data' /
    'winograd_weight' where those passes do better with other points, when the mix beats the
    best single candidate's own pass times by MIX_GAIN; {} otherwise."""
    if len(passes) < 2 or len(next(iter(passes.values()))) < 3:
        return {}
    own = min(sum(v) for v in passes.values())
    pick = [min(passes, key=lambda k: passes[k][p]) for p in range(3)]
    mixed = sum(passes[k][p] for p, k in enumerate(pick))
    if mixed * MIX_GAIN > own:
        return {}
    points = [configs[k][2] for k in pick]
    out = {"direct": times["direct"] * mixed / own, "winograd": points[0]}
    out.update({key: v for key, v in (("winograd_data", points[1]),
                                      ("winograd_weight", points[2])) if v != points[0]})
    return out


def timed_edges(net):
    """The conv edges whose mode is a choice (1x1x1 kernels always run direct)."""
    return [e for e in net.conv_edges() if e.ksize != (1, 1, 1)]


def time_network(net, *, training, repeats=2, budget=None, progress=None):
    """{layer: {'fft': s | None, 'direct': s, 'fft_bytes': n, 'fft_shape': [z, y, x]}} for
    every timed conv layer.

    FFT is not timed (None) for a layer whose kernel spectra alone exceed `budget`.
    progress: optional callable (k, layer) called before timing the k-th layer (from 1).
    """
    layers = {}
    for k, e in enumerate(timed_edges(net), 1):
        if progress:
            progress(k, e.name)
        nbytes = e.spectra_bytes(training)
        fits = budget is None or nbytes <= budget
        t = time_layer(e, training=training, repeats=repeats, fft=fits)
        layers[e.name] = {"fft": t["fft"], "direct": t["direct"], "fft_bytes": nbytes,
                          "fft_shape": list(e.fft_shape)}
        if "fft_engine" in t:
            layers[e.name]["fft_engine"] = t["fft_engine"]
        for key in ("first_call", "estimated"):
            if t.get(key):
                layers[e.name][key] = t[key]
        for key in plan_store.WINOGRAD_KEYS:  # the forward's 0 (GEMM) is the default
            if key in t and (t[key] or key != "winograd"):
                layers[e.name][key] = t[key]
    return layers


def choose_modes(net, layers, *, training, budget=None):
    """Set each timed layer to its faster mode, then demote FFT layers until the budget holds.

    `layers` as from time_network (or a saved plan).  Demotion takes the largest kernel
    spectra first.  Returns {layer: {'fft', 'direct', 'fft_bytes', 'choice', 'note'}}.
    """
    report = {}
    for e in timed_edges(net):
        t = layers[e.name]
        fft_ok = t.get("fft") is not None
        choice = "fft" if fft_ok and t["fft"] < t["direct"] else "direct"
        note = "" if fft_ok else "fft over budget (not timed)"
        e.fft_engine = t.get("fft_engine")  # the forward-only FFT engine that was faster
        e.winograd = t.get("winograd", 0)  # the direct kernels that were faster
        e.winograd_data, e.winograd_weight = t.get("winograd_data"), t.get("winograd_weight")
        report[e.name] = {"fft": t.get("fft"), "direct": t["direct"],
                          "fft_bytes": int(t.get("fft_bytes", e.spectra_bytes(training))),
                          "choice": choice, "note": note, "fft_engine": e.fft_engine,
                          "winograd": e.winograd, "winograd_data": e.winograd_data,
                          "winograd_weight": e.winograd_weight,
                          "first_call": t.get("first_call", []),
                          "estimated": t.get("estimated", [])}
    net.set_conv_mode({k: v["choice"] for k, v in report.items()})
    if budget is not None:
        fft_edges = sorted((e for e in timed_edges(net) if e.mode == "fft"),
                           key=lambda e: (report[e.name]["fft_bytes"],
                                          e.src.n * e.dst.n * int(np.prod(e.src.size))))
        while fft_edges and estimate_bytes(net, training=training,
                                           cache_ffts=K.CACHE_FFTS) > budget:
            e = fft_edges.pop()
            e.mode = report[e.name]["choice"] = "direct"
            report[e.name]["note"] = f"fft over the {human(budget)} memory budget"
    return report


def default_budget():
    """Half of the available memory (as `znn forward` uses by default)."""
    from znn.inference import available_memory

    return int(0.5 * available_memory())


@dataclass
class PlanResult:
    """What plan_network did: the per-layer report, the plan entry and file, whether it timed."""

    report: dict
    entry: plan_store.PlanEntry
    timed: bool

    @property
    def path(self):
        """The plan file (None when it could not be saved)."""
        return self.entry.path

    def counts(self, net):
        modes = [e.mode for e in net.conv_edges()]
        return modes.count("fft"), modes.count("direct")


def plan_network(net, znn_path, *, training, budget=None, repeats=2, force=False, log=None,
                 progress=None):
    """Set the conv modes of `net` from the saved plan of `znn_path`, timing (and saving) first
    when there is no matching plan or `force`.

    The plan is looked up by network content, machine, build, mode, output size, dtype and
    thread count (see znn.net.plan_store).  log: callable taking one line (notices);
    progress: see time_network (default: a line to `log` per layer, as timing a large
    network takes minutes).
    """
    log = log or (lambda line: None)
    mode = "train" if training else "forward"
    shapes = {e.name: tuple(e.fft_shape) for e in timed_edges(net)}
    if progress is None:
        def progress(k, name):
            log(f"  timing {name} ({k}/{len(shapes)})")
    key = dict(mode=mode, output_size=net.output_size, dtype=net.dtype.name,
               threads=net_threads(net))
    found = plan_store.find_plan(znn_path, fft_shapes=shapes, log=log, **key)
    entry, timed = found.entry, False
    if entry is None or force:
        if force:
            log(f"re-timing {len(shapes)} conv layer(s) (--force)")
        else:
            log(found.stale or NO_PLAN)
        layers = time_network(net, training=training, repeats=repeats, budget=budget,
                              progress=progress)
        entry = plan_store.new_entry(znn_path, layers=layers, repeats=repeats, **key)
        plan_store.save_plan(znn_path, entry, log)
        timed = True
    report = choose_modes(net, entry.layers, training=training, budget=budget)
    result = PlanResult(report, entry, timed)
    n_fft, n_direct = result.counts(net)
    log(f"conv plan: {entry.path or 'not saved'} ({n_fft} fft, {n_direct} direct)")
    demoted = [k for k, v in report.items() if "budget" in v["note"]]
    if demoted:
        of = f" of {human(budget)}" if budget is not None else " (when the plan was made)"
        log(f"conv plan: {', '.join(demoted)} run direct: FFT would exceed the memory "
            f"budget{of}")
    return result


def optimize_network(net, *, training=None, repeats=2, budget=None, znn_path=None,
                     force=False, log=None):
    """Switch every conv layer (not 1x1x1) to its faster mode; returns the per-layer report.

    Without `znn_path` the layers are timed and nothing is saved; with it the saved plan of
    that network file is used or made (see plan_network).  With a memory `budget` (bytes),
    FFT layers are switched back to direct until the estimate fits, largest spectra first.
    Returns {layer: {'fft': s, 'direct': s, 'fft_bytes': n, 'choice': mode, 'note': str}}.
    """
    training = net.phase == "train" if training is None else training
    if znn_path is not None:
        return plan_network(net, znn_path, training=training, budget=budget, repeats=repeats,
                            force=force, log=log).report
    layers = time_network(net, training=training, repeats=repeats, budget=budget)
    return choose_modes(net, layers, training=training, budget=budget)
