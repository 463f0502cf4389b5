#!/usr/bin/env bash
# make demo: network info, a short training run on the bundled EM crop, a dense forward pass.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."
ZNN="$VENV/bin/znn"
rm -rf demo-out && mkdir -p demo-out
echo "== znn --version"; "$ZNN" --version
echo "== znn info networks/demo2d.znn"; "$ZNN" info networks/demo2d.znn --outsz 1,48,48
echo "== znn train -c demo/demo.cfg"; "$ZNN" train -c demo/demo.cfg
echo "== znn forward -c demo/demo.cfg"; "$ZNN" forward -c demo/demo.cfg
"$VENV/bin/python" - <<'PY'
import numpy as np, tifffile, h5py
p = h5py.File("demo-out/out_sample1_output.h5", "r")["/main"][()]
lab = tifffile.imread("znn/samples/isbi2012_boundary.tif") > 0
err = float(np.mean((p[0] > 0.5) != lab))
print(f"== result: boundary map {p.shape}, pixel error {err:.3f} on the crop "
      f"(predicting 'all interior' gives {1 - lab.mean():.3f})")
PY
