# The two commands a new user needs (see README):
#   make demo   - start an embedded control plane and run the demo
#   make test   - run the whole test suite against a real kube-apiserver + etcd
# Both set up everything they need first: a virtualenv with the package and the
# Go-built kube-apiserver/etcd binaries (cached under ~/.cache/konductor).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Two workers share one control plane (started by the xdist controller).
PYTEST_ARGS ?= -n 2
BENCH_ARGS ?=

.PHONY: demo test check lint typecheck layers binaries bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

binaries: $(STAMP)
	$(PY) -m konductor_sdk.testing build

demo: binaries
	$(PY) examples/demo.py

test: binaries
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

layers: $(STAMP)
	$(VENV)/bin/lint-imports

check: lint typecheck layers

bench: binaries
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
