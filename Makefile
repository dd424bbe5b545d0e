# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
# Build the environment from PyPI and constraints.txt alone: a machine-wide pip config may add a
# local CPU-only torch wheel that PyPI's torchvision cannot load. Set PIP_ISOLATION= to keep yours.
PIP_ISOLATION ?= env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null
PIP = $(PIP_ISOLATION) $(VENV)/bin/python -m pip

.PHONY: setup demo test lint benchmark

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(VENV)/bin/atssrepro --help > /dev/null
	touch $@

# The main job on the embedded default: generate the synthetic COCO-format dataset, then train
# and evaluate the smoke-sized ATSS detector on it (about 2.5 minutes on 2 CPU cores). Training is
# deterministic for a given CPU model and thread count; the thread count is fixed here so that a
# machine prints the same AP whatever its number of cores (another CPU model prints another AP:
# README.md; tests/test_demo.py checks that the demo learns and is deterministic).
DEMO_THREADS ?= 2
demo: setup
	$(VENV)/bin/atssrepro data synth --out data/synth
	OMP_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/atssrepro train --preset demo --data data/synth --out results/demo

# Two test processes (pytest-xdist), each test file in one of them: the suite's time on 2 cores is
# about halved. OpenMP threads that busy-wait would steal the other process's core: passive waits.
TEST_WORKERS ?= 2
test: setup
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# ruff, pinned in the dev extra: the lint rules and the format of pyproject.toml's [tool.ruff].
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: setup
	$(VENV)/bin/python benchmarks/train_step.py
