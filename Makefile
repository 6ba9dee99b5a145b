# digitloc: `make demo` runs the main job, `make test` the tests; each sets up its own venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_VENV := .venv-demo
SHARED ?= ../shared
SAMPLE := $(SHARED)/data/svhn-train-sample/train
DEMO_OUT ?= demo-out
# The same paths as recipes/default.toml (its [vars]), for the targets below that read its runs.
DATA64 ?= data/svhn64x
STAGE3_RUN ?= runs/w025-64-s3
DATA ?= data/svhn128x64
RUN ?= runs/w025-128x64
FULL_RUN ?= runs/w100-64
SESSION_RUN ?= runs/w025-128x64-1s
# The 128x64 build of stage 4, which the one-session run trains on too.
BUILD_128X64 = $(BIN)/digitloc-data build --svhn $(SAMPLE) --crops-per-digit 8 --synthetic 60000 --size 128x64 \
	-o $(DATA) --force

.PHONY: venv demo test lint default-model default-exports exports-64 wide-stage session-model full-width keep-run bench drift-cpus compare detector-model detector-bench clean

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
	$(DEMO_VENV)/bin/digitloc-run samples/ --summary --json-out $(DEMO_OUT)/predictions.jsonl --output $(DEMO_OUT) --force
	$(DEMO_VENV)/bin/digitloc-run samples/*.png --model models/digitloc-detector-int8.onnx --summary \
		--json-out $(DEMO_OUT)/numbers.jsonl --output $(DEMO_OUT)/numbers --force
	@echo "annotated photos and video in $(DEMO_OUT)/, one JSON line per photo and frame in $(DEMO_OUT)/predictions.jsonl;"
	@echo "the detector's house numbers (every digit boxed) in $(DEMO_OUT)/numbers/ and $(DEMO_OUT)/numbers.jsonl"

lint: venv
	$(BIN)/ruff check .

test: venv lint
	DIGITLOC_SHARED=$(SHARED) $(BIN)/python -m pytest

# The whole default-model pipeline, as it made models/: the stages of recipes/default.toml (four
# trainings, each within 2 hours on 2 CPU cores, about 4.5 hours in all, with progress bars), the
# exports and the run records. The runtime's refine pass reads small digits again at a familiar size.
default-model: venv
	$(BIN)/digitloc-train recipe recipes/default.toml --set sample=$(SAMPLE)

# The shipped files from stage 4 and its variants; the 64x64 files from stage 3 (after default-model).
default-exports: venv
	$(BIN)/digitloc-train recipe recipes/default.toml --set sample=$(SAMPLE) --only 'export-default-*'

exports-64: venv
	$(BIN)/digitloc-train recipe recipes/default.toml --set sample=$(SAMPLE) --only 'export-64-*'

# Stage 5 (issue 15), tried and NOT shipped: recipes/wide-stage.toml (wide-framing build, the dense
# vs spatial head comparison, the winner continued; about 1 hour 50 minutes; needs stage 4's run).
wide-stage: venv
	$(BIN)/digitloc-train recipe recipes/wide-stage.toml --set sample=$(SAMPLE)

# One full training run that fits one working session (about 2 hours on 2 CPU cores): the
# 128x64 build (9 minutes; the same as stage 4's), then one from-scratch fit capped at 110 minutes.
session-model: venv
	$(BUILD_128X64)
	$(BIN)/digitloc-train fit --data $(DATA) -o $(SESSION_RUN) --size 128x64 --width 0.25 --batchnorm --epochs 60 \
		--steps-per-epoch 400 --batch-size 64 --lr 1e-3 --patience 10 --max-minutes 110 --force
	$(MAKE) keep-run FROM=$(SESSION_RUN) TO=models/w025-128x64-1s-run

# VGG19 at full width (the reference's backbone; from scratch, so with BatchNorm), 30 minutes on
# the default's stage-2 data (at --lr 1e-3 it did not learn: see the model card); its weights
# (about 240 MB) are not kept in models/.
full-width: venv
	$(BIN)/digitloc-train fit --data $(DATA64) -o $(FULL_RUN) --size 64 --width 1.0 --batchnorm \
		--epochs 30 --steps-per-epoch 100 --lr 1e-4 --patience 30 --max-minutes 30 --force
	$(BIN)/digitloc-export $(FULL_RUN)/model.keras -o $(FULL_RUN)/export/w100-64-fp32.onnx --parity-data $(DATA64) \
		--parity-size 256 --force
	$(BIN)/digitloc-export $(FULL_RUN)/model.keras -o $(FULL_RUN)/export/w100-64-int8.onnx --precision int8-static \
		--calib $(DATA64) --calib-size 256 --parity-size 256 --force
	$(MAKE) keep-run FROM=$(FULL_RUN) TO=models/w100-64-run

# A run's record into models/: config, history, evaluation, plots, parity reports; WEIGHTS=1 adds
# model.keras without optimizer state.
keep-run: venv
	$(BIN)/digitloc-train keep-run $(FROM) $(TO) $(if $(WEIGHTS),--keep-weights)

# The figures in README.md and models/MODEL_CARD.md (after `make default-model` and `make full-width`).
VARIANTS := models/digitloc-default-int8.onnx models/digitloc-default-fp32.onnx \
	$(RUN)/export/w025-128x64-fp16.onnx $(RUN)/export/w025-128x64-int8-dynamic.onnx
STAGE3_VARIANTS := models/digitloc-64-fp32.onnx models/digitloc-64-int8.onnx
FULL_VARIANTS := $(FULL_RUN)/export/w100-64-fp32.onnx $(FULL_RUN)/export/w100-64-int8.onnx
bench: venv
	$(BIN)/digitloc-bench latency $(VARIANTS) $(STAGE3_VARIANTS) $(FULL_VARIANTS) --keras $(RUN)/model.keras \
		--batches 1,8,32 --runs 50 --warmup 5 --refine-photos samples -o benchmarks/results/cpu --force
	$(BIN)/digitloc-bench drift $(RUN)/model.keras $(VARIANTS) --data $(DATA) -o benchmarks/results/cpu \
		--latency benchmarks/results/cpu/latency.json --framing $(SAMPLE) --force
	$(BIN)/digitloc-bench drift $(STAGE3_RUN)/model.keras $(STAGE3_VARIANTS) --data $(DATA64) \
		-o benchmarks/results/cpu/w025-64 --latency benchmarks/results/cpu/latency.json --force
	$(BIN)/digitloc-bench drift $(FULL_RUN)/model.keras $(FULL_VARIANTS) --data $(DATA64) \
		-o benchmarks/results/cpu/w100-64 --latency benchmarks/results/cpu/latency.json --force
	$(BIN)/digitloc-bench startup --model models/digitloc-default-int8.onnx --repeats 7 | tee benchmarks/results/cpu/startup.txt

# int8 drift of the default model on the CPUs a user may have, emulated with qemu-user (exact
# results, meaningless speed; needs Debian's qemu-user, and apt-get/pip once for the ARM64 sysroot):
# x86 AVX2 without VNNI, ARM64 Cortex-A76 (dotprod) and Cortex-A72 (NEON only). About 30 minutes.
EMULATE_DATA ?= $(DATA)
drift-cpus: venv
	for cpu in avx2 arm64 arm64-a72; do \
		$(BIN)/digitloc-bench drift models/w025-128x64-run/model.keras models/digitloc-default-fp32.onnx \
			models/digitloc-default-int8.onnx --data $(EMULATE_DATA) --emulate $$cpu -o benchmarks/results/drift/$$cpu \
			--force || exit 1; done

# onnxruntime alone and auto (the runtime's default read: the faster of onnxruntime and OpenVINO) against OpenVINO and LiteRT on the
# default model, interleaved (extra `peers`), then this CPU's int8 multiply-add ceilings beside those rates,
# and where onnxruntime and OpenVINO spend their time, layer by layer. COMPARE_OUT: one folder per CPU.
# Agreement is measured on the held-out photos and on a window around every digit of svhn-test-sample/fit
# (1,297 real digits the default never trained on; not eval/).
COMPARE_OUT ?= benchmarks/results/compare
FIT_CROPS ?= data/fit128x64
compare: venv
	$(BIN)/python -m pip install -q -e ".[peers]"
	$(BIN)/digitloc-data build --svhn $(SHARED)/data/svhn-test-sample/fit --crops-per-digit 1 --synthetic 0 \
		--size 128x64 --one-digit-split 0:0:1 --multi-digit-split 0:0:1 -o $(FIT_CROPS) --force
	$(BIN)/digitloc-bench compare models/w025-128x64-run/model.keras --int8 models/digitloc-default-int8.onnx \
		--fp32 models/digitloc-default-fp32.onnx --data $(EMULATE_DATA) --agreement-data $(FIT_CROPS) \
		--repeats 15 --calls 20 --litert-dir runs/litert -o $(COMPARE_OUT) --force
	$(BIN)/digitloc-bench ceiling $(COMPARE_OUT)/compare.json --model models/digitloc-default-int8.onnx \
		-o $(COMPARE_OUT)/ceiling --force
	for model in digitloc-default-int8 digitloc-detector-int8; do for b in 1 32; do \
		$(BIN)/python scripts/engine_profile.py models/$$model.onnx --batch $$b --calls 20 \
			-o $(COMPARE_OUT)/profile/$$model-b$$b.md || exit 1; done; done

# The digit detector (every digit, the house number): recipes/detector.toml (two detection sets, four training stages
# of at most 2 hours on 2 CPU cores, exports, run record). BACKBONE: the one-digit stage-4 model its conv blocks
# start from (after `make default-model`: BACKBONE=runs/w025-128x64/model.keras).
BACKBONE ?= models/w025-128x64-run/model.keras
TEST_SAMPLE := $(SHARED)/data/svhn-test-sample
DETECTORS := models/digitloc-detector-fp32.onnx models/digitloc-detector-int8.onnx
detector-model: venv
	$(BIN)/digitloc-train recipe recipes/detector.toml --set sample=$(SAMPLE) --set fit=$(TEST_SAMPLE)/fit \
		--set backbone=$(BACKBONE)

# The detector's figures: house numbers on the detection build's validation photos (where its stages, int8
# calibration and refine pass were chosen), on svhn-test-sample/eval (measured only, never trained on), the
# held-out one-digit photos of the train sample, int8 against fp32 on this CPU (through onnxruntime, and through
# OpenVINO's own int8 kernels: eval-openvino), latency (model + decoding) per
# batch through onnxruntime and OpenVINO (extra `openvino`, which `auto` picks from), timed interleaved.
DETECTOR_DATA ?= data/det192x96-d
detector-bench: venv
	$(BIN)/python -m pip install -q -e ".[openvino]"
	$(BIN)/digitloc-bench photos $(DETECTORS) --validation-of $(DETECTOR_DATA) \
		-o benchmarks/results/detector/validation --force
	$(BIN)/digitloc-bench photos $(DETECTORS) models/digitloc-default-int8.onnx --svhn $(TEST_SAMPLE)/eval \
		-o benchmarks/results/detector/eval --force
	$(BIN)/digitloc-bench photos $(DETECTORS) --svhn $(TEST_SAMPLE)/eval --provider openvino \
		-o benchmarks/results/detector/eval-openvino --force
	$(BIN)/digitloc-bench photos $(DETECTORS) models/digitloc-default-int8.onnx --svhn $(SAMPLE) --held-out-only \
		-o benchmarks/results/detector/one-digit --force
	$(BIN)/digitloc-bench drift models/det192x96-run/model.keras $(DETECTORS) --data $(TEST_SAMPLE)/eval \
		-o benchmarks/results/detector/drift --force
	$(BIN)/digitloc-bench latency $(DETECTORS) --providers cpu,openvino --batches 1,32 --runs 30 --warmup 3 \
		--refine-photos samples -o benchmarks/results/detector/latency --force
	# The one-digit photos it reads as more than one digit, drawn clean (label-audit.csv, -stage7.csv and -stage8.csv
	# beside it are a person's judgement of stage 4's, 7's and 8's sheets: judge again when the model changes).
	$(BIN)/python scripts/label_sheet.py models/digitloc-detector-int8.onnx --svhn $(SAMPLE) \
		-o benchmarks/results/detector/one-digit/read-as-more-digits.png --force
	# Eval's photos read wrong, and those read right with a digit's box under IoU 0.5 (digit recall lost to a box
	# drawn otherwise than SVHN's): SVHN's boxes green, the digits read red.
	$(BIN)/python scripts/label_sheet.py models/digitloc-detector-int8.onnx --wrong --svhn $(TEST_SAMPLE)/eval \
		-o benchmarks/results/detector/eval/wrong-numbers.png --force
	$(BIN)/python scripts/label_sheet.py models/digitloc-detector-int8.onnx --loose --svhn $(TEST_SAMPLE)/eval \
		-o benchmarks/results/detector/eval/loose-boxes.png --force
	# The sample video through digitloc-run (annotated copy written; the budget is 100 frames/s): on a new machine the
	# first run also probes the engines (once per model and CPU), the second reads with the cached choice.
	for run in first second; do out=$$($(BIN)/digitloc-run samples/sample-640x480.mp4 \
		--model models/digitloc-detector-int8.onnx --summary --output $(DEMO_OUT)/detector-video --force 2>&1) \
		|| { echo "$$out" >&2; exit 1; }; echo "$$out" | grep "frames predicted" | sed "s/^/$$run: /"; done \
		> benchmarks/results/detector/video.tmp && mv benchmarks/results/detector/video.tmp benchmarks/results/detector/video.txt

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DEMO_OUT) .pytest_cache .ruff_cache build
