"""`znn info`: layers, field of view, patch sizes, parameters and memory of a .znn network."""
from __future__ import annotations

import click

from znn.cli.options import DTYPE, SIZE3, normalise_dtype


def _fmt(v):
    return "x".join(str(int(a)) for a in v) if v else "-"


@click.command()
@click.argument("network", type=click.Path(dir_okay=False))
@click.option("--outsz", type=SIZE3, default=None, help="Output patch size z,y,x (default 1,100,100 "
              "for 2D networks, 1 x FOV for 3D).")
@click.option("--dtype", type=DTYPE, default=None, help="float32 (default) or float64.")
def info(network, outsz, dtype):
    """Show the layers, FOV, input patch, parameter count and memory of NETWORK (.znn)."""
    from znn import kernels
    from znn.formats.network_file import read_network
    from znn.net import memory, shapes
    from znn.net.graph import Network

    spec = read_network(network)
    fovs = shapes.fov(spec)
    first = next(iter(fovs.values()))
    if outsz is None:
        outsz = (1, 100, 100) if first[0] == 1 else (first[0],) * 3
    net = Network(spec, outsz, dtype=normalise_dtype(dtype) if dtype else None, seed=0)
    echo = click.echo
    echo(f"network      {network}")
    echo(f"dtype        {net.dtype.name}")
    for name, f in fovs.items():
        echo(f"input        {name}: {net.nodes[name].n} channel(s), FOV {_fmt(f)}, "
             f"patch {_fmt(net.nodes[name].size)}")
    for name in net.outputs:
        echo(f"output       {name}: {net.nodes[name].n} channel(s), size {_fmt(net.output_size)}")
    echo(f"parameters   {net.parameter_count():,}")
    echo("")
    header = f"{'layer':<14}{'type':<11}{'kernel':<9}{'dilation':<10}{'maps':<10}{'output size':<14}"
    echo(header + "params")
    for row in net.layer_table():
        maps = f"{row['n_in']}->{row['n_out']}"
        echo(f"{row['name']:<14}{row['type']:<11}{_fmt(row['kernel']):<9}"
             f"{_fmt(row['dilation']):<10}{maps:<10}{_fmt(row['out_size']):<14}{row['params']:,}")
    echo("")
    echo("memory estimate (one patch):")
    for mode in ("fft", "direct"):
        train = memory.estimate_bytes(net, mode, training=True, cache_ffts=kernels.CACHE_FFTS)
        infer = memory.estimate_bytes(net, mode, training=False, cache_ffts=kernels.CACHE_FFTS)
        echo(f"  {mode:<7} training {memory.human(train):>10}   inference {memory.human(infer):>10}")
