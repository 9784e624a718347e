# vicmae: one-command install, test, demo and benchmarks.
# Every target installs what it needs first; a second `make install` takes seconds.

SHELL := /bin/bash
# The Python .venv is built with: empty = the newest supported one on PATH (3.13, 3.12,
# 3.11; scripts/find-python.sh), or make PYTHON=/path/to/python3.12.
PYTHON ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := $(VENV)/.sysdeps

.PHONY: install sysdeps test test-fast lint mutate demo bench-loader bench-convert bench-train-gpu bundle bundle-rehearse gpu-check gpu-check-cpu clean

install: $(STAMP)

# FFCV 1.0.2 builds from source against OpenCV and libturbojpeg; libwebp is what the
# loader calls from compiled code.
sysdeps: $(SYSDEPS_STAMP)
$(SYSDEPS_STAMP):
	@bash scripts/install-sysdeps.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml $(SYSDEPS_STAMP)
	@if [ -x $(PY) ]; then \
	    bash scripts/find-python.sh $(PY) >/dev/null; \
	    echo "using $(VENV): Python $$($(PY) -c 'import platform; print(platform.python_version())') (make clean, then make PYTHON=... to build it with another)"; \
	else \
	    py=$$(bash scripts/find-python.sh $(PYTHON)) && \
	    echo "creating $(VENV) with $$py (Python $$($$py -c 'import platform; print(platform.python_version())'))" && \
	    $$py -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	@# setuptools notes every editable install whose package folder has another name
	@# (cli/ is installed as vicmae_cli) with a warning-styled "Editable installation."
	@# message; it is information only, and hidden so that real warnings stand out.
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Lint first (seconds): CI runs `make test`, so style and import errors stop a landing too.
test: install lint
	@bash scripts/run-tests.sh

test-fast: install
	@bash scripts/run-tests.sh -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Mutation testing of the numerical core and the engine's wiring (docs/development.md):
# about 30 minutes on 2 cores, so not part of `make test`. cosmic-ray makes the mutants;
# it is installed here, not in the dev extras CI installs. Options pass through:
# make mutate ARGS="--group loop --limit 10"
mutate: install
	$(PY) -m pip install --quiet 'cosmic-ray>=8.7,<9'
	$(PY) scripts/mutate.py $(ARGS)

demo: install
	@bash scripts/demo.sh

# Options pass through: make bench-loader ARGS="--workers 1,4,8,16". Figures go to the
# ignored benchmarks/out/; UPDATE=1 replaces the committed ones in benchmarks/results/.
BENCH_OUT := $(if $(UPDATE),--update-results,)
bench-loader: install
	$(PY) benchmarks/bench_loader.py $(BENCH_OUT) $(ARGS)

bench-convert: install
	$(PY) benchmarks/bench_convert.py $(BENCH_OUT) $(ARGS)

# Needs a CUDA GPU: ViT-B/16 pretraining throughput, MFU and peak memory.
bench-train-gpu: install
	$(PY) benchmarks/bench_train_gpu.py $(BENCH_ARGS)

# An offline bundle for GPU nodes without network (docs/operations.md).
# Needs network here and a CPython 3.12 (BUNDLE_PYTHON=...) to build ffcv's cp312 wheel.
bundle: install
	@bash scripts/bundle.sh

# The bundle installed offline into NODE_PYTHON (a node-like Python 3.12) with no network
# and this machine's copies of the bundled libraries hidden; then the CPU rehearsal.
bundle-rehearse:
	@bash scripts/bundle-rehearse.sh

# On a GPU node: training step MFU, end to end, loader scaling, CUDA paths (<= 8 minutes).
GPU_CHECK_ARGS ?= --bundle bundle
gpu-check:
	@bash scripts/gpu-check.sh $(GPU_CHECK_ARGS)

# The same script with tiny settings on this machine's CPU (what CI runs as a slow test).
gpu-check-cpu: install
	@bash scripts/gpu-check.sh --cpu

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out bundle
