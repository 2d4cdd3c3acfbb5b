"""The installed console scripts (pyproject.toml's [project.scripts]): each runs one command exactly as
`python -m <module>` does, from any folder.

    awm-generate --game Pong --steps 300000 --out_dir data/pong      # python -m src.dataset.generate_dataset
    awm-inspect data/pong                                            # python -m src.dataset.inspect_dataset
    awm-merge --out_dir data/pong data/pong_part1 data/pong_part2    # python -m src.dataset.merge_datasets
    awm-convert data/pong data/pong_frames --layout frames           # python -m src.dataset.convert_dataset
    awm-import-dqn Pong/1/replay_logs data/pong_dqn --game Pong      # python -m src.dataset.import_dqn_replay
    awm-train [key=value ...]                                        # python -m src.train
    awm-eval --checkpoint runs/<run>/checkpoints/best.pt             # python -m src.eval
    awm-play --checkpoint runs/<run>/checkpoints/best.pt             # python -m src.play
    awm-agent agent.world_model=runs/<run>                           # python -m src.agent
    awm-agent-eval --agent runs/<agent run>                          # python -m src.agent.evaluate
"""

from __future__ import annotations

import os

from src.utils.errors import run_cli


def generate() -> None:
    from src.dataset import generate_dataset

    run_cli(generate_dataset.main)


def inspect() -> None:
    from src.dataset import inspect_dataset

    run_cli(inspect_dataset.main)


def merge() -> None:
    from src.dataset import merge_datasets

    run_cli(merge_datasets.main)


def convert() -> None:
    from src.dataset import convert_dataset

    run_cli(convert_dataset.main)


def import_dqn() -> None:
    from src.dataset import import_dqn_replay

    run_cli(import_dqn_replay.main)


def train() -> None:
    from src import train as training

    run_cli(training.main)


def evaluate() -> None:
    from src import eval as evaluation

    run_cli(evaluation.main)


def play() -> None:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from src import play as playing

    run_cli(playing.main)


def agent() -> None:
    from src.agent import __main__ as agent_training

    run_cli(agent_training.main)


def agent_evaluate() -> None:
    from src.agent import evaluate as agent_evaluation

    run_cli(agent_evaluation.main)
