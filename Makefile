# kubemill — the commands a newcomer needs. `make test` installs everything it needs from this repository's own
# files (virtualenv, runtimes, the control plane built from Go modules) and runs every test tier.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Debian's python3 when present: the virtualenv must be usable by the test node's non-root pods, and a
# python under /root (pyenv) is not reachable for them.
BOOT_PYTHON ?= $(shell if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi)
VENV := .venv
PY := $(VENV)/bin/python
# Runtimes (bun) and script dependency caches live in the checkout (git-ignored), where non-root pods can read them.
export KUBEMILL_HOME ?= $(CURDIR)/.cache/kubemill
PYTEST_ARGS ?=

.PHONY: help install tools ui cluster-bin objectstore-bin argo-bin images demo test unit integration lint bench fuzz cluster crds clean

help:
	@echo "make demo | test | unit | integration | images | lint | bench | fuzz | cluster | crds | clean"

$(VENV)/.installed: pyproject.toml scripts/install-runtimes
	$(BOOT_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	PYTHON=$(PY) scripts/install-runtimes
	touch $@

# The web UI's bundle (Preact + Vite), served by `kubemill ui`; rebuilt when its sources change.
UI_BUNDLE := operator/kubemill/ui/static/index.html
$(UI_BUNDLE): ui/package.json ui/package-lock.json ui/index.html ui/vite.config.js $(shell find ui/src -type f 2>/dev/null)
	cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

ui: $(UI_BUNDLE)

# helm (from the Go module proxy) for the chart tests, Debian's chromium for the browser tests.
tools:
	scripts/install-tools >/dev/null
	scripts/install-browser

install: $(VENV)/.installed ui tools

# The control plane's binaries and the real node's kubelet (tests/realnode), from Go modules.
cluster-bin:
	tests/cluster/build.sh kubelet >/dev/null

# The tests' S3 server (SeaweedFS `weed`, from the Go module proxy), cached in ~/.cache/kubemill/objectstore.
objectstore-bin:
	scripts/build-objectstore >/dev/null

# Argo Workflows' workflow-controller and argoexec (from the Go module proxy), cached in ~/.cache/kubemill/argo:
# tests/bench/bench_argo.py builds them itself through this script; a failed build stops that bench saying why.
argo-bin:
	scripts/build-argo >/dev/null

# The operator and runner images from this repository's Dockerfiles, with podman (a no-op when warm).
images:
	scripts/build-images

# A script, then a flow (a Python step, a loop over the script, a Bash step), on this machine: no cluster.
demo: $(VENV)/.installed
	$(VENV)/bin/kubemill run f/demo/hello --workspace examples/windmill --input '{"name": "kubemill"}'
	$(VENV)/bin/kubemill run f/demo/greet_and_count --workspace examples/windmill --input '{"names": "Ada, Grace"}'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install cluster-bin objectstore-bin
	$(PY) -m pytest tests/integration tests/e2e $(PYTEST_ARGS)

# Every tier, slow tests included: lint, unit, then the real control plane.
test: install cluster-bin objectstore-bin images lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install cluster-bin
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# The fuzzing harnesses at length (`make test` runs them with 200 examples each): FUZZ_EXAMPLES per test.
FUZZ_EXAMPLES ?= 20000
fuzz: install
	KUBEMILL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q -p no:randomly --hypothesis-show-statistics $(PYTEST_ARGS)

cluster: install cluster-bin
	scripts/with-cluster

crds: install
	$(VENV)/bin/kubemill crds -o crds/
	PYTHON=$(PY) charts/kubemill/sync-files

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
