"""`znn forward -c run.cfg [-n net.h5] [-r 1-3]`: dense inference over whole volumes."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from znn.cli.options import SIZE3, config_option, dtype_option, overrides_from, sets_option


def _progress_printer(enabled):
    last = {"t": 0.0}

    def show(k, n, voxels, seconds):
        if not enabled:
            return
        now = time.monotonic()
        if k < n and now - last["t"] < 0.5:
            return
        last["t"] = now
        rate = voxels / max(seconds, 1e-9)
        eta = seconds / k * (n - k)
        line = (f"\r  tile {k}/{n} [{'#' * int(30 * k / n):<30}] {rate:,.0f} voxels/s, "
                f"ETA {eta:.0f} s")
        click.echo(line, nl=k == n, err=True)

    return show


@click.command()
@config_option
@click.option("-n", "--net", "net", type=click.Path(dir_okay=False), default=None,
              help="Trained network .h5 (overrides forward_net); znn's or the original ZNN's.")
@click.option("-r", "--range", "sample_range", default=None,
              help="Samples to process, e.g. 1-3,6 (overrides forward_range).")
@dtype_option
@click.option("--outsz", type=SIZE3, default=None, help="Override forward_outsz (z,y,x).")
@click.option("--max-memory", default=None,
              help="Memory budget, e.g. 8G (default: half of the available memory).")
@click.option("--tta", is_flag=True, help="Average over flips/transposes (boundary outputs; exact for odd FOVs, with an even FOV each flipped pass sees its window shifted by one voxel).")
@sets_option
@click.pass_context
def forward(ctx, config, net, sample_range, dtype, outsz, max_memory, tta, sets):
    """Run a trained network densely over every sample of forward_range."""
    from znn.formats.config_file import read_config
    from znn.formats.dataset_file import read_dataset_spec
    from znn.formats.network_file import read_network
    from znn.inference import VolumeForward, parse_memory

    cfg = read_config(config, overrides_from(
        sets, dtype, forward_net=net, forward_range=sample_range,
        forward_outsz=",".join(map(str, outsz)) if outsz else None))
    cfg.require("fdata_spec", "forward_range", "forward_net", "output_prefix")
    quiet = (ctx.obj or {}).get("verbose", 0) < 0
    log = (lambda line: None) if quiet else click.echo
    dspec = read_dataset_spec(cfg.fdata_spec)
    input_nodes = read_network(cfg.fnet_spec).inputs()
    runner = VolumeForward(
        cfg.fnet_spec, cfg.forward_net, dtype=cfg.dtype, conv_mode=cfg.forward_conv_mode,
        num_threads=cfg.num_threads, mirror=cfg.is_bd_mirror, outsz=cfg.forward_outsz,
        max_memory=parse_memory(max_memory) if max_memory else None,
        softmax=cfg.cost_fn == "softmax_loss", tta=tta, out_type=cfg.out_type, log=log,
        progress=_progress_printer(not quiet and sys.stderr.isatty()))
    cfg_prefix = str(cfg.output_prefix)
    Path(cfg_prefix).parent.mkdir(parents=True, exist_ok=True)
    cfg.check_samples(dspec, "forward_range")
    for sid in cfg.forward_range:
        inputs = {}
        for node in input_nodes:
            image = dspec.input_image(sid, node)
            inputs[node] = list(zip(image.fnames, image.pp_types))
        log(f"sample {sid}:")
        runner.run(inputs, f"{cfg_prefix}_sample{sid}")
