"""Click parameter types shared by the znn commands."""
from __future__ import annotations

import click


class Size3(click.ParamType):
    """A z,y,x size: 'z,y,x', 'y,x' (z = 1) or a single n (1,n,n)."""

    name = "z,y,x"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [int(v) for v in str(value).replace("x", ",").split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a size like 1,100,100", param, ctx)
        if len(parts) == 1:
            parts = [1, parts[0], parts[0]]
        elif len(parts) == 2:
            parts = [1] + parts
        if len(parts) != 3 or min(parts) < 1:
            self.fail(f"{value!r} is not a size of 3 positive integers (z,y,x)", param, ctx)
        return tuple(parts)


SIZE3 = Size3()
DTYPE = click.Choice(["float32", "float64", "single", "double"])


def normalise_dtype(value):
    return {"single": "float32", "double": "float64"}.get(value, value)


def parse_sets(values):
    """--set key=value pairs -> dict (click.BadParameter on a malformed pair)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


# Options shared by the commands that read a run configuration.
config_option = click.option(
    "-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
    help="Run configuration (.cfg, section [parameters]).")
dtype_option = click.option("-d", "--dtype", type=DTYPE, default=None, help="Override dtype.")
sets_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                           help="Override any [parameters] key (repeatable).")


def overrides_from(sets, dtype=None, **values):
    """The `read_config` overrides of --set pairs, -d and other non-None options."""
    out = parse_sets(sets)
    if dtype:
        out["dtype"] = normalise_dtype(dtype)
    out.update({k: str(v) for k, v in values.items() if v is not None})
    return out
