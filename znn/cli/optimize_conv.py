"""`znn optimize-conv`: time FFT and direct convolution per layer and save the conv plan."""
from __future__ import annotations

import sys

import click
import numpy as np

from znn.cli.options import SIZE3, dtype_option, normalise_dtype, overrides_from, sets_option
from znn.errors import ZnnError


def _fmt(v):
    return "x".join(str(int(a)) for a in v) if v else "-"


def _ms(t):
    """Milliseconds with about three significant digits."""
    if t is None:
        return "-"
    ms = t * 1e3
    return f"{ms:.{0 if ms >= 100 else 1 if ms >= 10 else 2 if ms >= 1 else 3}f}"


def _speedup(r):
    """'1.52x faster' for the choice over the other mode (or slower, when the budget forced it)."""
    if r["fft"] is None or not r["fft"] > 0 or not r["direct"] > 0:
        return r["note"] or "-"
    mine, other = (r["fft"], r["direct"]) if r["choice"] == "fft" else (r["direct"], r["fft"])
    ratio = other / mine
    text = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    return f"{text} ({r['note']})" if r["note"] else text


def _method(points):
    return f"w{points}" if points else "gemm"


def choice_label(e, r):
    """The method a plan report row `r` (conv_plan.choose_modes) gives edge `e`, as the
    table shows it: 'fft (blocked 1x64x64)', 'direct (winograd 6)', 'direct (f w6, d gemm,
    w w6)'."""
    choice = r["choice"]
    if choice == "fft" and r.get("fft_engine"):
        blocks = e.cheapest_blocks() if r["fft_engine"] == "blocked" else None
        size = f" {_fmt(blocks.fft)}" if blocks else ""
        choice += f" ({r['fft_engine']}{size})"
    own = [r.get("winograd_data"), r.get("winograd_weight")]
    if choice == "direct" and own != [None, None]:  # the passes' methods differ
        f = r.get("winograd") or 0
        d, w = (f if v is None else v for v in own)
        choice += f" (f {_method(f)}, d {_method(d)}, w {_method(w)})"
    elif choice == "direct" and r.get("winograd"):
        choice += f" (winograd {r['winograd']})"
    return choice


def _table(net, report):
    from znn.net.conv_plan import FIRST_CALL_ABOVE, SLAB_PARTS, THIN_PARTS
    from znn.net.memory import human

    head = ["layer", "kernel", "dilation", "maps", "input size", "fft ms", "direct ms", "choice",
            "fft memory", "choice vs other"]
    rows = []
    for e in net.conv_edges():
        r = report.get(e.name)
        base = [e.name, _fmt(e.ksize), _fmt(e.dilation), f"{e.src.n}->{e.dst.n}", _fmt(e.src.size)]
        if r is None:  # 1x1x1
            rows.append(base + ["-", "-", "direct", "-", "1x1x1: always direct"])
        else:
            choice = choice_label(e, r)
            fft, direct = (_ms(r[m]) + ("*" if m in r.get("first_call", ()) else "")
                           + ("~" if m in r.get("estimated", ()) else "")
                           for m in ("fft", "direct"))
            rows.append(base + [fft, direct, choice, human(r["fft_bytes"]), _speedup(r)])
    widths = [max(len(str(row[i])) for row in [head] + rows) for i in range(len(head))]
    right = {5, 6, 8}
    for row in [head] + rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())
    if any(r.get("first_call") for r in report.values()):
        click.echo(f"* one first call only (with its one-time costs): more than "
                   f"{FIRST_CALL_ABOVE:g}x the fastest first call, so not timed again")
    if any(r.get("estimated") for r in report.values()):
        click.echo(f"~ estimated from a pass over 1/{SLAB_PARTS} (or 1/{THIN_PARTS}) of the "
                   f"output: more than {FIRST_CALL_ABOVE:g}x the fastest first call, so never "
                   f"run whole")


def _describe(entry):
    return f"{entry.mode}, output {_fmt(entry.output_size)}, {entry.dtype}, " \
        f"{_threads(entry.threads)}"


def _threads(n):
    return f"{n} thread{'' if n == 1 else 's'}"


def _forward_size(cfg, spec, budget, threads):
    """The output size `znn forward` would use for the first forward_range sample."""
    from znn.formats.dataset_file import read_dataset_spec
    from znn.formats.volumes import open_volume_lazy
    from znn.inference import plan_output_size
    from znn.kernels import CACHE_FFTS
    from znn.net import shapes

    if cfg.fdata_spec is None or not cfg.forward_range:
        if cfg.forward_outsz is None:
            cfg.require("forward_outsz", "fdata_spec", "forward_range")
        return tuple(cfg.forward_outsz)
    dspec = read_dataset_spec(cfg.fdata_spec)
    cfg.check_samples(dspec, "forward_range")
    sid = cfg.forward_range[0]
    node = spec.inputs()[0]
    vol = open_volume_lazy(dspec.input_image(sid, node).fnames[0])
    try:
        vshape = tuple(vol.shape[-3:])
    finally:
        vol.close()
    fov = shapes.fov(spec)[node]
    out_total = vshape if cfg.is_bd_mirror else tuple(v - f + 1 for v, f in zip(vshape, fov))
    if min(out_total) < 1:
        raise ZnnError(f"volume {_fmt(vshape)} of sample {sid} is smaller than the field of "
                       f"view {_fmt(fov)}")
    # sized as VolumeForward does for `optimize` (direct), then FFT where it fits
    return plan_output_size(spec, out_total, cfg.forward_outsz, budget, cfg.dtype, "direct",
                            threads, CACHE_FFTS).output_size


def _run_mode(znn_path, spec, mode, outsz, dtype, threads, budget, repeats, force, log):
    from znn.kernels import CACHE_FFTS
    from znn.net import memory
    from znn.net.conv_plan import plan_network, timed_edges
    from znn.net.graph import Network

    training = mode == "train"
    net = Network(spec, outsz, dtype=dtype, conv_mode="direct", num_threads=threads, seed=0,
                  phase="train" if training else "test")
    layer_budget = budget
    if not training:  # as VolumeForward: the budget less the tile's input and output arrays
        per_tile = sum(net.nodes[n].n * int(np.prod(net.nodes[n].size))
                       for n in net.inputs)
        per_tile += sum(net.nodes[n].n * int(np.prod(outsz)) for n in net.outputs)
        layer_budget = budget - per_tile * net.dtype.itemsize
    click.echo(f"{mode}: {znn_path.name}, output {_fmt(net.output_size)}, {net.dtype.name}, "
               f"{_threads(memory.net_threads(net))}, memory budget {memory.human(budget)}")
    progress = _progress(len(timed_edges(net)))
    result = plan_network(net, znn_path, training=training, budget=layer_budget,
                          repeats=repeats, force=force, log=log, progress=progress)
    _table(net, result.report)
    need = memory.estimate_bytes(net, training=training, cache_ffts=CACHE_FFTS)
    click.echo(f"estimated memory with these choices: {memory.human(need)}")
    if result.timed and result.path is None:
        raise ZnnError("the conv plan could not be saved (see above)")
    if result.timed:
        click.echo(f"saved: {result.path} ({_describe(result.entry)})")
    else:
        click.echo(f"reused: {result.path} ({_describe(result.entry)}, timed "
                   f"{result.entry.created}; --force re-times)")


def _progress(total):
    if not sys.stderr.isatty():
        return None

    def show(k, name):
        click.echo(f"\r  timing {name} ({k}/{total})...   ", nl=k == total, err=True)
    return show


def _make_log(quiet):
    from znn.net.conv_plan import NO_PLAN

    def log(line):
        if quiet or line.startswith("conv plan: "):  # the table and saved: line say it
            return
        click.echo("timing conv layers (no saved plan)" if line == NO_PLAN else line)
    return log


@click.command("optimize-conv")
@click.argument("network", required=False, type=click.Path(dir_okay=False))
@click.option("-c", "--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Run configuration (.cfg): its network, train_outsz, forward size, dtype "
                   "and num_threads.")
@click.option("--mode", type=click.Choice(["train", "forward", "both"]), default="both",
              show_default=True, help="Time forward + backward (train), forward only, or both.")
@click.option("--outsz", default=None, metavar="z,y,x",
              help="Output patch size of the plan (with NETWORK).")
@click.option("--threads", type=int, default=None,
              help="Worker threads (0: every core); with -c overrides num_threads.")
@dtype_option
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True,
              help="Timed passes per layer and mode (the best counts), after one warm-up.")
@click.option("--max-memory", default=None,
              help="Memory budget, e.g. 8G (default: half of the available memory).")
@click.option("--force", is_flag=True, help="Re-time even when a matching plan is saved.")
@sets_option
@click.pass_context
def optimize_conv(ctx, network, config, mode, outsz, threads, dtype, repeats, max_memory, force,
                  sets):
    """Time FFT and direct convolution for every conv layer and save the plan that
    `train_conv_mode = optimize` / `forward_conv_mode = optimize` reuse.

    Either -c run.cfg, or NETWORK (.znn) with --outsz.  The plan is saved next to the
    network as NETWORK.plan.
    """
    from pathlib import Path

    from znn.formats.network_file import read_network
    from znn.inference import parse_memory
    from znn.net.conv_plan import default_budget

    if (network is None) == (config is None):
        raise ZnnError("optimize-conv needs either -c run.cfg or a NETWORK.znn with --outsz "
                       f"(got {'both' if network else 'neither'})")
    budget = parse_memory(max_memory) if max_memory else default_budget()
    quiet = (ctx.obj or {}).get("verbose", 0) < 0
    log = _make_log(quiet)
    modes = ("train", "forward") if mode == "both" else (mode,)
    if config is not None:
        from znn.formats.config_file import read_config

        if outsz is not None:
            raise ZnnError("--outsz goes with NETWORK; with -c the sizes are train_outsz and "
                           "forward_outsz (change them with --set)")
        cfg = read_config(config, overrides_from(sets, dtype, num_threads=threads))
        znn_path = Path(cfg.fnet_spec)
        spec = read_network(znn_path)
        sizes = {}
        for m in modes:
            sizes[m] = tuple(cfg.train_outsz) if m == "train" else \
                _forward_size(cfg, spec, budget, cfg.num_threads)
        dtype, threads = cfg.dtype, cfg.num_threads
    else:
        if sets:
            raise ZnnError("--set goes with -c run.cfg")
        if outsz is None:
            raise ZnnError(f"{network}: --outsz z,y,x is needed with a NETWORK (the output "
                           "patch size the plan is for)")
        try:
            size = SIZE3.convert(outsz, None, None)
        except click.BadParameter as exc:
            raise ZnnError(f"--outsz: {exc.message}") from None
        znn_path = Path(network)
        spec = read_network(znn_path)
        sizes = {m: size for m in modes}
        dtype = normalise_dtype(dtype) if dtype else None
        threads = 0 if threads is None else threads
    for k, m in enumerate(modes):
        if k:
            click.echo("")
        _run_mode(znn_path, spec, m, sizes[m], dtype, threads, budget, repeats, force, log)

