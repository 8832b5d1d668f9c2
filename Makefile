# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: pip takes the CPU wheel from local disk; the project's range accepts it,
# so nothing pulls a CUDA build. torchvision must never be installed (it breaks transformers).
# --no-compile, and Python writes the byte-code of what it imports on first use. This machine sets
# PYTHONDONTWRITEBYTECODE=1, under which nothing is written and every process, every test subprocess
# included, recompiled torch, diffusers and transformers: a fresh clone's `make test` took 16 min 48 s
# that way. So the targets below unset it. (Compiling everything at install instead, compileall -j 0,
# cost 51 s, and `make demo`, which imports a fraction of the venv once, took 10 min 43 s.)
# The demo installs the runtime dependencies only; the test and lint targets add the dev extras
# (pytest, ruff, schemathesis, playwright: about 20 s of a fresh clone's install).
TORCH := torch==2.13.0
DEV_STAMP := $(VENV)/.installed-dev
NO_TORCHVISION := if $(BIN)/pip show torchvision >/dev/null 2>&1; then echo "torchvision must not be installed" >&2; exit 1; fi
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install install-dev demo test test-slow test-all bench results device-inputs lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile $(TORCH)
	$(BIN)/pip install -q --no-compile -e .
	@$(NO_TORCHVISION)
	touch $(STAMP)

install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-compile -e '.[dev]'
	@$(NO_TORCHVISION)
	touch $(DEV_STAMP)

demo: install
	$(BIN)/ragar demo --out runs/demo

test: install-dev
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install-dev
	$(BIN)/python -m pytest -m slow -q

test-all: install-dev
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run

# rerun the command behind every results JSON the README and docs cite, then rewrite their tables
# (long: about half an hour on 2 cores after `make demo`; not in CI)
results: install
	$(BIN)/python scripts/results.py

# inputs and wheels for scripts/device-check.sh on a GPU machine (after `make demo`; docs/SCALING.md)
device-inputs: install
	PYTHON=$(BIN)/python scripts/device-check.sh prepare
	$(BIN)/ragar train export-pairs --data runs/demo/world --out .device/pairs --config render-128

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
