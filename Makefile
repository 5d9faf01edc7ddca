# make test: set up .venv (idempotent) and run the test suite.
# make demo: set up, generate the synthetic dataset if absent, train, evaluate, draw predictions.
PY := .venv/bin/python
SYNTH_CONFIG := configs/Synthetic/mask_rcnn_vitdet_tiny.py
DEMO_OUT := output/synthetic
# The demo trains with two processes of one thread each where there are two cores or more
# (gloo, as --num-gpus does on a CPU), each on half of every batch: on 2 cores 1.17x faster per
# step than one process with two threads, whose many small ops run on one core while the other
# waits (docs/BENCHMARKS.md). The cores are split between the processes.
NPROC := $(shell nproc 2>/dev/null || echo 1)
DEMO_PROCS ?= $(if $(filter 1,$(NPROC)),1,2)
DEMO_THREADS ?= $(shell echo $$(( $(NPROC) / $(DEMO_PROCS) )))

.PHONY: setup test demo lint benchmark

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) tools/make_synthetic.py --root datasets/synthetic
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) tools/train_net.py --num-gpus $(DEMO_PROCS) \
		--config-file $(SYNTH_CONFIG) train.output_dir=$(DEMO_OUT)
	$(PY) tools/demo.py --config-file $(SYNTH_CONFIG) --weights $(DEMO_OUT)/model_final.pth \
		--input datasets/synthetic/val --output $(DEMO_OUT)/demo
	@echo "pictures with predicted masks: $(DEMO_OUT)/demo/"

lint: setup
	$(PY) -m ruff check vitdet tools tests configs
	$(PY) -m ruff format --check vitdet tools tests configs
	.venv/bin/lint-imports

benchmark: setup
	$(PY) tools/benchmarks/speed.py
