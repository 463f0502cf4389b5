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
