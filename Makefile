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

.PHONY: venv demo test lint default-model bench clean

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
	$(BIN)/digitloc-export $(RUN)/model.keras -o models/digitloc-default-fp32.onnx --parity-data $(DATA) \
		--parity-size 512 --force
	$(BIN)/digitloc-export $(RUN)/model.keras -o models/digitloc-default-int8.onnx --precision int8-static \
		--calib $(DATA) --calib-size 512 --parity-size 512 --force
	$(BIN)/digitloc-export $(RUN)/model.keras -o $(RUN)/export/w025-64-fp16.onnx --precision fp16 \
		--parity-data $(DATA) --parity-size 512 --force
	$(BIN)/digitloc-export $(RUN)/model.keras -o $(RUN)/export/w025-64-int8-dynamic.onnx --precision int8-dynamic \
		--parity-data $(DATA) --parity-size 512 --force
	mkdir -p models/w025-64-run
	for f in config.json history.csv history.json evaluation.json curves.png confusion.png val-predictions.png; do \
		cp $(RUN)/$$f models/w025-64-run/; done
	cp $(RUN)/export/*.parity.json models/w025-64-run/
	$(BIN)/python -c "from digitloc.train.model import load_model; \
		load_model('$(RUN)/model.keras').save('models/w025-64-run/model.keras')"  # weights without optimizer state

# The figures in README.md and models/MODEL_CARD.md (after `make default-model`).
VARIANTS := models/digitloc-default-fp32.onnx models/digitloc-default-int8.onnx \
	$(RUN)/export/w025-64-fp16.onnx $(RUN)/export/w025-64-int8-dynamic.onnx
bench: venv
	$(BIN)/digitloc-bench latency $(VARIANTS) --keras $(RUN)/model.keras --batch 1,8,32 --runs 50 --warmup 5 \
		-o benchmarks/results/cpu --force
	$(BIN)/digitloc-bench drift $(RUN)/model.keras $(VARIANTS) --data $(DATA) -o benchmarks/results/cpu --force
	$(BIN)/digitloc-bench startup --model models/digitloc-default-int8.onnx --repeats 7 | tee benchmarks/results/cpu/startup.txt

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache build
