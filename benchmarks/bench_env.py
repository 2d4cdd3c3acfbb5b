"""Imagined steps per second of WorldModelVectorEnv, against the bare frame predictor at the same batch.

    python benchmarks/bench_env.py [--batches 1,16,64] [--steps 10] [--rounds 3] [--device cpu]

The model is config.yaml's default size (build_model(ModelConfig()), untrained: speed does not depend on the
weights), with torch's default threads. Per batch B it times, after 2 warm-up calls each, --rounds rounds of --steps
calls of each of
  model forward   model(context, actions) alone under inference_mode: frames only, the reference
  vector env      envs.step(actions): the forward pass, the feedback, the event head, the step's bookkeeping and
                  the (B, T, H, W) uint8 observations copied to numpy
and prints a markdown table: batch, steps/s (B imagined steps per call), ms per call, and the env's time per call
over the forward's (its overhead, event head included). The two alternate round by round and each reports its median
round, so that drift (another process on the machine) hits both alike. Default run: about 20 s on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.envs.atari import EnvSettings  # noqa: E402
from src.imagination import WorldModelVectorEnv  # noqa: E402
from src.models.rollout import Feedback  # noqa: E402
from src.models.world_model import ModelConfig, build_model  # noqa: E402

NUM_ACTIONS = 6  # Pong's
WARMUP = 2


def seconds_per_call(call: Callable[[], object], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def medians(calls: list[Callable[[], object]], steps: int, rounds: int, device: torch.device) -> list[float]:
    """Seconds per call of each of `calls`: the median of `rounds` rounds that alternate between them."""
    for call in calls:
        for _ in range(WARMUP):
            call()
    timed = [[seconds_per_call(call, steps, device) for call in calls] for _ in range(rounds)]
    return [statistics.median(column) for column in zip(*timed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,16,64", help="comma-separated numbers of games stepped together")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the forward and the env per batch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(feedback="uint8"), NUM_ACTIONS).eval().to(device)
    rng = np.random.default_rng(0)
    print(
        f"device {device}, {torch.get_num_threads()} threads, model unet_film {ModelConfig().channels}, "
        f"median of {args.rounds} rounds of {args.steps} calls\n"
    )
    print("| batch | model forward steps/s | vector env steps/s | ms per env.step (B games) | env / forward time |")
    print("|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        envs = WorldModelVectorEnv(
            model,
            NUM_ACTIONS,
            batch,
            env_settings=EnvSettings("Pong"),
            feedback=Feedback("uint8"),
            device=device,
            end_threshold=1.0,
        )  # no ends: every call steps every game
        envs.reset_to(rng.integers(0, 256, size=(batch, 4, 84, 84), dtype=np.uint8))
        context = envs.games.context.clone()
        actions = rng.integers(NUM_ACTIONS, size=batch)
        actions_t = torch.from_numpy(actions).to(device)

        def forward(context: torch.Tensor = context, actions_t: torch.Tensor = actions_t) -> None:
            with torch.inference_mode():
                model(context, actions_t)

        def env_step(envs: WorldModelVectorEnv = envs, actions: np.ndarray = actions) -> None:
            envs.step(actions)

        reference, env_s = medians([forward, env_step], args.steps, args.rounds, device)
        print(
            f"| {batch} | {batch / reference:,.1f} | {batch / env_s:,.1f} | {env_s * 1000:,.1f} "
            f"| {env_s / reference:.2f} |",
            flush=True,
        )
        envs.close()


if __name__ == "__main__":
    main()
