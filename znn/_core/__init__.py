"""Compiled kernels (C on MKL, wrapped with Cython). Use znn.kernels, not this package."""
from znn._core import _build  # noqa: F401  (sets MKL's threading layer before any MKL call)
