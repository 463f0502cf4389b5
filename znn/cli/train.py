"""`znn train -c run.cfg [-s seed.h5]`: train a network as the ZNN docs describe."""
from __future__ import annotations

import click

from znn.cli.options import DTYPE, normalise_dtype


def parse_sets(values):
    """--set key=value pairs -> dict (click.BadParameter on a malformed pair)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


@click.command()
@click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
              help="Run configuration (.cfg, section [parameters]).")
@click.option("-s", "--seed-net", "seed_net", type=click.Path(dir_okay=False), default=None,
              help="Seed matching layers from this .h5 (znn's or the original ZNN's).")
@click.option("-d", "--dtype", type=DTYPE, default=None, help="Override dtype.")
@click.option("--seed", type=int, default=None, help="Random seed (reproducible runs).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any [parameters] key (repeatable).")
@click.pass_context
def train(ctx, config, seed_net, dtype, seed, sets):
    """Train the network of CONFIG; rerun the same command to resume after a stop."""
    from znn.formats.config_file import read_config
    from znn.trainer import Trainer

    overrides = parse_sets(sets)
    if dtype:
        overrides["dtype"] = normalise_dtype(dtype)
    if seed is not None:
        overrides["seed"] = str(seed)
    cfg = read_config(config, overrides)
    quiet = (ctx.obj or {}).get("verbose", 0) < 0
    trainer = Trainer(cfg, seed_net=seed_net, log=(lambda line: None) if quiet else click.echo)
    trainer.run()
