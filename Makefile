# make test: set up .venv (idempotent) and run the test suite.
# make demo: set up, generate the synthetic dataset if absent, train, evaluate, draw predictions.
PY := .venv/bin/python
SYNTH_CONFIG := configs/Synthetic/mask_rcnn_vitdet_tiny.py
DEMO_OUT := output/synthetic

.PHONY: setup test demo lint benchmark

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) tools/make_synthetic.py --root datasets/synthetic
	$(PY) tools/train_net.py --config-file $(SYNTH_CONFIG) train.output_dir=$(DEMO_OUT)
	$(PY) tools/demo.py --config-file $(SYNTH_CONFIG) --weights $(DEMO_OUT)/model_final.pth \
		--input datasets/synthetic/val --output $(DEMO_OUT)/demo
	@echo "pictures with predicted masks: $(DEMO_OUT)/demo/"

lint: setup
	$(PY) -m ruff check vitdet tools tests configs
	$(PY) -m ruff format --check vitdet tools tests configs
	.venv/bin/lint-imports

benchmark: setup
	$(PY) tools/benchmarks/speed.py
