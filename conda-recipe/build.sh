#!/usr/bin/env bash
# Build against conda's MKL: setup.py reads MKLROOT and links $PREFIX/lib/libmkl_rt.so.
set -euxo pipefail
export MKLROOT="$PREFIX"
"$PYTHON" -m pip install . --no-deps --no-build-isolation -vv
