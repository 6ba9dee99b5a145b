# digitloc: `make demo` runs the main job, `make test` the tests; both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
SAMPLE := $(SHARED)/data/svhn-train-sample/train
DEMO_OUT ?= demo-out

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,export,serve,dev]"
	touch $@

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest

demo: venv
	$(BIN)/digitloc-data check $(SAMPLE)
	$(BIN)/digitloc-data build --svhn $(SAMPLE) --synthetic 400 --crops-per-digit 1 --size 64 -o $(DEMO_OUT)/data --force
	$(BIN)/digitloc-data preview $(DEMO_OUT)/data/val.npz --kind real -o $(DEMO_OUT)/val-real.png --force
	$(BIN)/digitloc-data preview $(DEMO_OUT)/data/train.npz --kind crop -o $(DEMO_OUT)/train-crops.png --force
	$(BIN)/digitloc-data preview $(DEMO_OUT)/data/train.npz --kind synth -o $(DEMO_OUT)/train-synth.png --force

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
