"""`make bench`: every benchmark in turn, tables printed and written to bench-results/."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_layers.py", "bench_networks.py", "bench_tasks.py", "bench_malis.py")


def main():
    """Run each script; stop at the first one that fails (its exit code)."""
    for script in SCRIPTS:
        path = HERE / script
        if not path.exists():
            print(f"== {script}: missing, skipped", flush=True)
            continue
        print(f"== {script}", flush=True)
        rc = subprocess.run([sys.executable, str(path)]).returncode
        if rc != 0:
            how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            print(f"bench: {script} failed ({how}); stopping, later benchmarks not run",
                  file=sys.stderr, flush=True)
            return rc if rc > 0 else 1
    print(f"bench: all done, results in {HERE.parent / 'bench-results'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
