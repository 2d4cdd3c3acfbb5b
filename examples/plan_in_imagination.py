"""Random-shooting planning inside the world model, scored in the real game against a random policy.

    python examples/plan_in_imagination.py --checkpoint runs/<run> [--episodes 3] [--max_steps 60]
                                           [--candidates 16] [--depth 8] [--seed 0] [--device cpu]

At every real step the planner starts `candidates` imagined games from the real frame stack (WorldModelVectorEnv
.reset_to), plays a random action sequence of `depth` steps in each (one batched forward pass per imagined step),
and acts with the first action of the sequence of highest imagined return (the predicted reward signs summed up to a
predicted end; ties broken at random). Both policies play the same seeded episodes, each capped at --max_steps steps.
The defaults take a few minutes on 2 CPU cores with the default model size; a GPU allows far longer episodes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.envs.game import Game  # noqa: E402
from src.imagination import WorldModelVectorEnv  # noqa: E402
from src.utils.errors import ArgumentParser, run_cli  # noqa: E402


def plan(envs: WorldModelVectorEnv, obs: np.ndarray, depth: int, rng: np.random.Generator) -> int:
    """The first action of the best of num_envs random sequences imagined from obs (T, H, W) uint8."""
    envs.reset_to(obs)
    sequences = rng.integers(envs.single_action_space.n, size=(envs.num_envs, depth))  # (C, D)
    returns, alive = np.zeros(envs.num_envs), np.ones(envs.num_envs, dtype=bool)
    for d in range(depth):
        _, rewards, terminated, _, _ = envs.step(sequences[:, d])
        returns += rewards * alive  # the reward of the ending step counts, none after it
        alive &= ~terminated
    best = np.flatnonzero(returns == returns.max())
    return int(sequences[rng.choice(best), 0])


def play(game: Game, seed: int, max_steps: int, act) -> tuple[float, int]:  # noqa: ANN001 (obs -> action)
    """One real episode (seeded), capped at max_steps: (return, steps)."""
    obs, total, steps, done = game.reset(seed), 0.0, 0, False
    while not done and steps < max_steps:
        transition = game.step(act(obs))
        obs, total, steps, done = transition.next_obs, total + transition.reward, steps + 1, transition.done
    return total, steps


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="a run folder (runs/<run>) or a .pt file; needs an event head"
    )
    parser.add_argument("--episodes", type=int, default=3, help="real episodes per policy")
    parser.add_argument("--max_steps", type=int, default=60, help="real steps per episode at most (both policies)")
    parser.add_argument("--candidates", type=int, default=16, help="random action sequences imagined per real step")
    parser.add_argument("--depth", type=int, default=8, help="imagined steps per sequence")
    parser.add_argument("--seed", type=int, default=0, help="episode e of both policies is seeded seed + e")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    args = parser.parse_args(argv)
    for flag in ("episodes", "max_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    envs = WorldModelVectorEnv.from_checkpoint(
        args.checkpoint, device=args.device, num_envs=args.candidates, horizon=args.depth, autoreset_mode="Disabled"
    )
    game, rng = Game(envs.env_settings), np.random.default_rng(args.seed)
    policies = {
        "random": lambda obs: int(rng.integers(game.num_actions)),
        "planner": lambda obs: plan(envs, obs, args.depth, rng),
    }
    results = {}
    for name, act in policies.items():
        start, played = (
            time.perf_counter(),
            [play(game, args.seed + e, args.max_steps, act) for e in range(args.episodes)],
        )
        returns, steps = np.array([r for r, _ in played]), sum(s for _, s in played)
        results[name] = {
            "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
            "steps": float(steps),
            "steps_per_s": steps / (time.perf_counter() - start),
        }
        print(
            f"{name:>8}: return {returns.mean():+.2f} ± {returns.std():.2f} over {args.episodes} episodes "
            f"(at most {args.max_steps} steps each), {results[name]['steps_per_s']:.1f} real steps/s",
            flush=True,
        )
    game.close()
    envs.close()
    return results


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    run_cli(cli)
