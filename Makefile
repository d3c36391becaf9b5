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

# Release artifacts are built reproducibly: file times in the wheel/sdist are the last
# commit's (or 0 outside a git checkout).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --pretty=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

.PHONY: demo test check lint typecheck layers binaries helm bench clean dist dist-check docs \
	generate lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The distribution used to be called `konductor`: drop it from older venvs.
	$(PY) -m pip uninstall --quiet --yes konductor 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[test,dev,docs,release]'
	touch $(STAMP)

binaries: $(STAMP)
	$(PY) -m konductor_sdk.testing build

# helm (for the chart tests), built from its Go module and cached like kube-apiserver.
helm: $(STAMP)
	$(PY) -m konductor_sdk.testing build --helm

demo: binaries
	$(PY) examples/demo.py

test: binaries helm
	$(PY) -m pytest $(PYTEST_ARGS)

# deploy/, the chart's generated files and examples/k8s/rbac.yaml, from crds/ + policies/.
generate: $(STAMP)
	$(PY) deploy/generate.py

# Wheel + sdist into dist/, then `twine check` and a smoke test of both installed into
# fresh virtualenvs, away from this checkout.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	# setuptools leaves its metadata in the tree: leave the tree as it was.
	rm -rf konductor_sdk.egg-info

dist-check: $(STAMP)
	$(VENV)/bin/twine check --strict dist/*
	$(PY) tests/release/check_dist.py dist

# The documentation site into build/site (warnings are errors).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# The image's hashed dependency lock (needs PyPI).
lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-find-links --no-emit-index-url \
		--output-file requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
		--no-emit-find-links --no-emit-index-url \
		--output-file requirements-build.lock requirements-build.in

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
