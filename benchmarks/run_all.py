"""`make bench`: every benchmark, tables printed and written to bench-results/."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("bench_layers.py", "bench_networks.py", "bench_malis.py"):
    if (HERE / script).exists():
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True)
