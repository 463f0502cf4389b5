# znn: `make demo` (set up .venv + train and run a small network on the bundled sample)
# and `make test` (the test suite).  Both create .venv/ when it is missing.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip -q --disable-pip-version-check
BUILT  := $(VENV)/.znn-built
TORCH  := $(VENV)/.torch
SOURCES := $(shell find znn -name '*.pyx' -o -name '*.pxd' -o -path '*/src/*') setup.py pyproject.toml
PYTEST_ARGS ?=

.PHONY: all demo test test-fast bench build lint clean conda

all: build

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "setuptools>=70" wheel

# Editable install: the extensions are built in place (znn/_core/*.so) against the mkl wheels.
$(BUILT): $(VPY) $(SOURCES)
	$(PIP) install "Cython>=3" numpy mkl mkl-devel mkl-include
	$(PIP) install --no-build-isolation -e ".[test]"
	@touch $@

build: $(BUILT)

# PyTorch CPU is a test/benchmark reference only, never a dependency of znn.
$(TORCH): $(VPY)
	$(PIP) install torch==2.13.0
	@touch $@

demo: $(BUILT)
	@bash demo/run.sh $(VENV)

test: $(BUILT) $(TORCH)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(BUILT)
	$(VPY) -m pytest -q -m "not slow" -x $(PYTEST_ARGS)

bench: $(BUILT) $(TORCH)
	$(VPY) benchmarks/run_all.py

lint: $(BUILT)
	$(PIP) install ruff
	$(VENV)/bin/ruff check znn tests benchmarks

conda:
	conda build conda-recipe

clean:
	rm -rf build dist *.egg-info znn/_core/*.so znn/_core/_*.c demo-out bench-results .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
