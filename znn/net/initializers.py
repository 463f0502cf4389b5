"""Weight and bias initializers of the .znn format (zero, constant, uniform, gaussian, ...)."""
from __future__ import annotations

import math

import numpy as np

from znn.errors import SpecError

NAMES = ("zero", "constant", "uniform", "gaussian", "bernoulli", "xavier", "msra")


def initialize(init, args, shape, fan_in, fan_out, rng, dtype, where=None):
    """Array of `shape` drawn from initializer `init` with `args` (defaults already filled).

    fan_in = n_in * |kernel| and fan_out = n_out * |kernel| (xavier, msra).  `where` is a
    (path, line) pair for error messages.
    """
    path, line = where or (None, None)

    def fail(message):
        raise SpecError(message, path, line, key="init_args")

    args = tuple(float(a) for a in (args or ()))
    if init == "zero":
        values = np.zeros(shape)
    elif init == "constant":
        if len(args) != 1:
            fail("init 'constant' needs one value in init_args")
        values = np.full(shape, args[0])
    elif init == "uniform":
        lo, hi = (-abs(args[0]), abs(args[0])) if len(args) == 1 else (args + (-0.1, 0.1))[:2]
        if len(args) > 2 or lo > hi:
            fail(f"init 'uniform' needs init_args min,max with min <= max, got {args}")
        values = rng.uniform(lo, hi, size=shape)
    elif init == "gaussian":
        mean, std = args if len(args) == 2 else (0.0, 0.01) if not args else (None, -1.0)
        if std < 0:
            fail(f"init 'gaussian' needs init_args mean,stddev with stddev >= 0, got {args}")
        values = rng.normal(mean, std, size=shape)
    elif init == "bernoulli":
        p = args[0] if args else 0.5
        if len(args) > 1 or not 0.0 <= p <= 1.0:
            fail(f"init 'bernoulli' needs one probability in [0, 1], got {args}")
        values = (rng.random(size=shape) < p).astype(np.float64)
    elif init == "xavier":
        r = math.sqrt(6.0) / math.sqrt(fan_in + fan_out)
        values = rng.uniform(-r, r, size=shape)
    elif init == "msra":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    else:
        raise SpecError(f"unknown init '{init}' (one of {', '.join(NAMES)})", path, line,
                        key="init")
    return np.ascontiguousarray(values, dtype=dtype)


def tie_blocks(filters, repeat):
    """In place: replace every repeat-sized block of each kernel by its mean (`repeat` option)."""
    repeat = tuple(int(r) for r in repeat)
    if repeat == (1, 1, 1):
        return filters
    n_in, n_out, kz, ky, kx = filters.shape
    rz, ry, rx = repeat
    blocks = filters.reshape(n_in, n_out, kz // rz, rz, ky // ry, ry, kx // rx, rx)
    blocks[...] = blocks.mean(axis=(3, 5, 7), keepdims=True)
    return filters
