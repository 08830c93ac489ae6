# Quick start:  make demo         (sets up .venv and runs the demo)
#               make tensorboard  (shows the demo's explanation panels: http://localhost:6006)
#               make test         (sets up .venv and runs the tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo tensorboard test lint bench bench-real clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/train_with_igos.py

# The demo's log folder; `make tensorboard LOGDIR=lightning_logs` shows another.
LOGDIR ?= runs/demo
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir $(LOGDIR)

test: $(STAMP)
	$(BIN)/ruff check lightning_igos tests examples bench
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/solver.py

bench-real: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	cd bench && ../$(BIN)/python real_model.py --per-image --out results

clean:
	rm -rf $(VENV) lightning_logs .pytest_cache
