"""`znn train -c run.cfg [-s seed.h5]`: train a network as the ZNN docs describe."""
from __future__ import annotations

import click

from znn.cli.options import config_option, dtype_option, overrides_from, sets_option


@click.command()
@config_option
@click.option("-s", "--seed-net", "seed_net", type=click.Path(dir_okay=False), default=None,
              help="Seed matching layers from this .h5 (znn's or the original ZNN's).")
@dtype_option
@click.option("--seed", type=int, default=None, help="Random seed (reproducible runs).")
@sets_option
@click.pass_context
def train(ctx, config, seed_net, dtype, seed, sets):
    """Train the network of CONFIG; rerun the same command to resume after a stop."""
    from znn.formats.config_file import read_config
    from znn.trainer import Trainer

    cfg = read_config(config, overrides_from(sets, dtype, seed=seed))
    quiet = (ctx.obj or {}).get("verbose", 0) < 0
    trainer = Trainer(cfg, seed_net=seed_net, log=(lambda line: None) if quiet else click.echo)
    trainer.run()
