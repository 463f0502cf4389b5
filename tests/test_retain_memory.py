"""kernels.retain_freed_memory keeps freed pages mapped for reuse (the CLI turns it on)."""
import subprocess
import sys

import pytest

CHILD = r"""
import sys, numpy as np
from znn import kernels

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

on = sys.argv[1] == "on"
if on:
    assert kernels.retain_freed_memory()
before = rss()
a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
del a
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_memory_stays_mapped_only_when_asked():
    kept = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                             check=True).stdout
        kept[mode] = int(out.split()[-1])
    assert kept["off"] < 16 * 2**20     # glibc returns a freed 64 MiB block to the system
    assert kept["on"] > 48 * 2**20      # retained for the next pass


TUNE = r"""
import numpy as np
from znn.process import huge_page_advice, tune_memory
before = huge_page_advice()
retained, after = tune_memory()
print(before, retained, after, tune_memory(huge_pages=True)[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc, numpy THP")
def test_tune_memory_retains_and_turns_huge_page_advice_off():
    out = subprocess.run([sys.executable, "-c", TUNE], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == ["True", "False", "True"]


def test_cli_commands_tune_memory(monkeypatch):
    from click.testing import CliRunner

    import znn.process
    from znn.cli.main import cli

    calls = []
    monkeypatch.setattr(znn.process, "tune_memory", lambda huge_pages: calls.append(huge_pages))
    CliRunner().invoke(cli, ["forward", "--help"])
    CliRunner().invoke(cli, ["train", "--help"])
    CliRunner().invoke(cli, ["--version"])
    assert calls == [False, True]
