#!/usr/bin/env bash
# The GPU checks in one command, on a machine with a CUDA GPU (make gpu-report): about 8 minutes, one report.
#   1. make test-gpu: the tests of the CUDA path
#   2. benchmarks/bench_train.py at batch 32, 256 and 1024: samples/s, MFU and the share of each step outside the GPU,
#      with the batches read by the loader and gathered from the dataset held on the device (data.on_device)
#   3. a 3-minute quality run with the gpu profile: a 100,000-step Pong dataset in the compact layout, trained for 3
#      minutes (profile=gpu), evaluated on fresh episodes (ratio to copy-last, action gap, alive scores)
# Writes OUT (default runs/gpu_report)/report.md, each part's whole output beside it; a part that fails is reported
# and the next one runs. Every part has a time limit, so that the whole fits a short lease of a machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT="${1:-runs/gpu_report}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "error: torch sees no CUDA GPU here; run make gpu-report on a machine with one (make test covers the CPU)" >&2
    exit 2
fi
mkdir -p "$OUT"
REPORT="$OUT/report.md"
part() {  # part NAME SECONDS COMMAND...: run it with a limit, its output to OUT/NAME.txt, its tail into the report
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    {
        echo "## $name (exit $rc, $((SECONDS - start)) s; whole output: $name.txt)"
        echo '```'
        tail -n 40 "$OUT/$name.txt"
        echo '```'
    } >>"$REPORT"
}
{
    echo "# GPU report, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
} >"$REPORT"
part test-gpu 150 env AWM_TEST_GPU=1 "$PY" -m pytest -m gpu -q
part bench-train 170 "$PY" benchmarks/bench_train.py --batch_sizes 32,256,1024 --workers 4 --steps 10 --rounds 2 \
    --out_dir "$OUT/bench_train"
part quality-data 60 "$PY" -m src.dataset.generate_dataset --game Pong --steps 100000 --layout frames \
    --out_dir "$OUT/data/pong" --resume
part quality-train 220 "$PY" -m src.train profile=gpu data.dir="$OUT/data/pong" train.max_minutes=3 \
    experiment.name=gpu_report experiment.runs_dir="$OUT/runs" experiment.wandb.mode=disabled
part quality-eval 90 "$PY" -m src.eval --checkpoint "$(ls -td "$OUT"/runs/*_gpu_report 2>/dev/null | head -n 1)" \
    --horizon 100 --episodes 8 --starts_per_episode 12 --event_episodes 0 --videos 2 --out_dir "$OUT/runs" \
    --wandb_mode disabled
echo "report: $REPORT"
