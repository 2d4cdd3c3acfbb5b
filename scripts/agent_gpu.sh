#!/usr/bin/env bash
# An agent trained inside a world model at DIAMOND's order of imagined steps, on a machine with a CUDA GPU, then scored
# in the real game (docs/agent.md, "Training on a GPU"):
#   scripts/agent_gpu.sh [WORLD_MODEL_RUN] [UPDATES]
# Without a world-model run it makes one first: a 100,000-step Pong dataset (compact layout) and 3 minutes of training
# with the gpu profile. UPDATES (default 700) batches of 1,024 imagined games x 15 steps: 700 is 10.8M imagined steps.
# Then python -m src.agent.evaluate: agent, random and planner over 10 full real episodes each. Everything it makes
# goes under runs/agent_gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORLD="${1:-}"
UPDATES="${2:-700}"
OUT=runs/agent_gpu
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "error: torch sees no CUDA GPU here; on a CPU train with python -m src.agent agent.max_minutes=30 (docs/agent.md)" >&2
    exit 2
fi
mkdir -p "$OUT"
if [ -z "$WORLD" ]; then
    "$PY" -m src.dataset.generate_dataset --game Pong --steps 100000 --layout frames --out_dir "$OUT/data" --resume
    "$PY" -m src.train profile=gpu data.dir="$OUT/data" train.max_minutes=3 train.max_steps=100000 \
        experiment.runs_dir="$OUT" experiment.name=world
    WORLD="$(ls -td "$OUT"/*_Pong_world | head -n 1)"
fi
"$PY" -m src.agent profile=gpu agent.world_model="$WORLD" agent.num_envs=1024 agent.max_updates="$UPDATES" \
    agent.log_every=20 agent.save_every=100 experiment.runs_dir="$OUT" experiment.name=gpu
AGENT="$(ls -td "$OUT"/*_agent_gpu | head -n 1)"
"$PY" -m src.agent.evaluate --agent "$AGENT" --episodes 10 --out_dir "$OUT"
