# digitloc: `make demo` runs the main job, `make test` the tests; each sets up its own venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_VENV := .venv-demo
SHARED ?= ../shared
SAMPLE := $(SHARED)/data/svhn-train-sample/train
DEMO_OUT ?= demo-out
DATA ?= data/svhn64
RUN ?= runs/w025-64

.PHONY: venv demo test lint default-model clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,export,serve,dev]"
	touch $@

# The demo installs the runtime alone, as a device would: a regular (non-editable) install of
# the base package (numpy, onnxruntime, OpenCV), no TensorFlow.
$(DEMO_VENV)/.installed: pyproject.toml $(wildcard runtime/*.py models/*.onnx)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install -q .
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/digitloc-run samples/ --json --output $(DEMO_OUT) --force
	@echo "annotated photos and video in $(DEMO_OUT)/"

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest

# The whole default-model pipeline, as it made models/ (about 80 minutes on 2 CPU cores).
default-model: venv
	$(BIN)/digitloc-data build --svhn $(SAMPLE) --crops-per-digit 4 --synthetic 30000 --size 64 -o $(DATA) --force
	$(BIN)/digitloc-train fit --data $(DATA) -o $(RUN) --size 64 --width 0.25 --batchnorm --epochs 40 \
		--batch-size 64 --lr 1e-3 --box-loss mse+giou --patience 8 --max-minutes 70 --force
	$(BIN)/digitloc-export $(RUN)/model.keras -o models/digitloc-default-fp32.onnx --parity-data $(DATA) --force
	$(BIN)/digitloc-export $(RUN)/model.keras -o models/digitloc-default-int8.onnx --precision int8-static \
		--calib $(DATA) --calib-size 512 --force

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache build
