# amigo-burst — the two set-up commands are `make demo` and `make test`.
# Each creates/updates .venv itself (scripts/install.sh; TORCH_SPEC=... for a CUDA torch).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
# optional extras installed into .venv; `make test` adds export (llama-cpp-python: builds llama.cpp, minutes, once)
AMIGO_EXTRAS ?= train,dev

.PHONY: venv demo test test-fast test-e2e test-gpu mutate lint bench-cli bench-demo clean

venv:
	@AMIGO_EXTRAS=$(AMIGO_EXTRAS) scripts/install.sh

## the five-stage pipeline on a tiny offline model, local target, CPU; then the report
demo: venv
	$(PY) -m amigo_burst.demo

# pytest-xdist workers for make test / test-fast: whole test files per worker (--dist loadfile keeps a
# file's module fixtures, e.g. a finished pipeline, on one worker). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

## everything a user's machine can run (unit + slow integration + faults + badinput); no e2e.
## Prints its wall time, the slowest files (tests/timing_summary.py) and the 25 slowest tests.
test: AMIGO_EXTRAS = train,dev,export
test: venv
	$(PYTEST) -m "not e2e and not gpu" $(XDIST) --durations=25 tests

## a fast subset for development: no real training runs, no subprocess pipelines
test-fast: venv
	$(PYTEST) -m "not slow and not e2e and not gpu and not faults" $(XDIST) tests

## SkyPilot on a loopback Slurm cluster (needs root on Debian: installs slurm, munge, sshd)
## (scripts/test-e2e.sh: the sandbox up once, E2E_WORKERS=4 pytest-xdist workers, down again after)
test-e2e: venv
	scripts/test-e2e.sh

## the CUDA-only tests (tests/test_gpu.py: bitsandbytes CUDA NF4, GPU memory counters); fail without a GPU
test-gpu: venv
	$(PYTEST) -m gpu tests

## mutation check of the tests: one small edit at a time in a temp copy, the tests that must catch it
## (scripts/mutate.py; MUTATE_ARGS="--fast" skips the two that train, "--only NAME" picks entries)
mutate: venv
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

lint: venv
	$(VENV)/bin/ruff check amigo_burst train tests bench scripts

bench-cli: venv
	$(PY) bench/cli_startup.py

bench-demo: venv
	$(PY) bench/demo_wall.py

clean:
	rm -rf .amigo demo-project build *.egg-info
