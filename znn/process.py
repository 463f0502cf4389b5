"""Process-wide memory settings that the znn commands turn on for their runs."""
from __future__ import annotations

import numpy as np


def _numpy_multiarray():
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(core, "multiarray", None)


def huge_page_advice(enable=None):
    """Whether numpy asks the kernel for transparent huge pages on large arrays; with
    `enable`, set it first.  None where this numpy cannot tell."""
    ma = _numpy_multiarray()
    if ma is None or not hasattr(ma, "_get_madvise_hugepage"):
        return None
    if enable is not None:
        ma._set_madvise_hugepage(bool(enable))
    return bool(ma._get_madvise_hugepage())


def tune_memory(huge_pages=False):
    """For a run of many large passes: keep freed memory mapped for the next pass
    (kernels.retain_freed_memory) and, unless `huge_pages`, give numpy arrays normal pages.

    numpy advises huge pages for arrays of 4 MiB and more; where the kernel compacts memory
    on demand for such advice (transparent_hugepage/defrag = madvise, the common default),
    a fresh process's first touch of a huge page costs far more than of normal pages
    (measured here: 3.1-3.5 s per GiB against 0.42 s).  Inference touches most of its memory
    once or a few times, so `znn forward` turns the advice off; training reuses the same
    memory for thousands of steps, where huge pages are ~1.5% faster (N4, one core: 0.74 s
    against 0.75 s per step after the first), so `znn train` keeps it.
    Returns (retained, huge pages advised afterwards).
    """
    from znn import kernels

    return bool(kernels.retain_freed_memory()), huge_page_advice(bool(huge_pages))
