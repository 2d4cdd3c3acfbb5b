# make demo: record a small Pong dataset, train on it for DEMO_TRAIN_STEPS optimizer steps, evaluate; make test: the test
# suite. Both set up .venv first. The demo's budget is steps, not minutes: the same model on every machine (a
# 10-minute budget trained 1,035 steps on a 2-core AVX2-only CPU and ~2,000 on an AVX-512 one); a slower machine
# takes longer (about 9 minutes of training on a 2-core AVX-512 CPU, about 14 on a 2-core AVX2-only one).
PY := .venv/bin/python
DEMO_DATA := data/demo_pong
DEMO_STEPS := 30000
DEMO_TRAIN_STEPS := 1400

.PHONY: setup demo test test-fast test-gpu gpu-report lint bench bench-quality clean-demo

.venv/.installed: pyproject.toml requirements.lock scripts/setup_venv.sh
	./scripts/setup_venv.sh

setup: .venv/.installed

demo: .venv/.installed
	$(PY) -m src.dataset.generate_dataset --game Pong --steps $(DEMO_STEPS) --out_dir $(DEMO_DATA) --resume
	$(PY) -m src.dataset.inspect_dataset $(DEMO_DATA)
	$(PY) -m src.train data.dir=$(DEMO_DATA) train.max_steps=$(DEMO_TRAIN_STEPS) experiment.name=demo
	$(PY) -m src.eval --game Pong --horizon 100 --event_episodes 8 --checkpoint "$$(ls -td runs/*_Pong_demo | head -n 1)/checkpoints/best.pt"

# make test: the whole suite, what CI runs (under 10 minutes on 2 cores). make test-fast: without the tests marked
# slow (processes that import torch, kill drills, fuzzing, torchrun, trainings of seconds), about 2 minutes.
test: .venv/.installed
	$(PY) -m pytest

test-fast: .venv/.installed
	$(PY) -m pytest -m "not slow"

# The CUDA path's own tests, on a machine with a GPU (make test runs everything else on the CPU, GPU or not).
test-gpu: .venv/.installed
	AWM_TEST_GPU=1 $(PY) -m pytest -m gpu

# Every GPU check in one command and one report (runs/gpu_report/report.md), about 8 minutes: the CUDA tests,
# bench_train at batch 32/256/1024 with and without the data on the device, and a 3-minute quality run (gpu profile).
gpu-report: .venv/.installed
	./scripts/gpu_report.sh

# The formatting and lint check that make test also runs (tests/test_lint.py); ruff skips what .gitignore lists.
lint: .venv/.installed
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

bench: .venv/.installed
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py

bench-quality: .venv/.installed
	$(PY) benchmarks/bench_quality.py --budget cpu

clean-demo:
	rm -rf $(DEMO_DATA)
