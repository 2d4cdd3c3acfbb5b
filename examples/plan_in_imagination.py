"""Planning inside the world model (CEM over held actions), scored in the real game against a random policy.

    python examples/plan_in_imagination.py --checkpoint runs/<run> [--agent runs/<agent run>] [--episodes 3]
                                           [--max_steps 200] [--decisions 3] [--repeat 4] [--population 8]
                                           [--iterations 2] [--seed 0] [--device cpu]

Every --repeat real steps the planner imagines --iterations x --population sequences of --decisions actions, each
held --repeat steps (one batched forward pass per imagined step), scores them by the reward head's probabilities
(and, with --agent, the agent's critic at the end: what lies beyond the plan's reach), and holds the first action of
the best one (src/agent/planner.py). Both policies play the same seeded episodes, capped at --max_steps. The
defaults take about 3 minutes on 2 CPU cores with the default model size; python -m src.agent.evaluate scores the
planner over full episodes beside a trained agent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.agent.checkpoint import read_agent  # noqa: E402
from src.agent.evaluate import play_episode, standard_error  # noqa: E402
from src.agent.planner import Planner, PlannerSettings  # noqa: E402
from src.envs.game import Game  # noqa: E402
from src.imagination.games import CheckpointWorld  # noqa: E402
from src.utils.errors import ArgumentParser, run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="a run folder (runs/<run>) or a .pt file; needs an event head"
    )
    parser.add_argument("--agent", default=None, help="an agent run (python -m src.agent): its critic scores the ends")
    parser.add_argument("--episodes", type=int, default=3, help="real episodes per policy")
    parser.add_argument("--max_steps", type=int, default=200, help="real steps per episode at most (both policies)")
    parser.add_argument("--decisions", type=int, default=3, help="actions per imagined sequence")
    parser.add_argument("--repeat", type=int, default=4, help="steps each action is held (imagined and real)")
    parser.add_argument("--population", type=int, default=8, help="sequences imagined per CEM iteration")
    parser.add_argument("--iterations", type=int, default=2, help="CEM iterations per plan (1: random shooting)")
    parser.add_argument("--seed", type=int, default=0, help="episode e of both policies is seeded seed + e")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    args = parser.parse_args(argv)
    for flag in ("episodes", "max_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    settings = PlannerSettings(args.decisions, args.repeat, args.population, args.iterations, min(4, args.population))
    if problem := settings.check():
        parser.error(problem.replace("--plan_", "--"))
    world = CheckpointWorld.load(args.checkpoint, args.device)
    critic = read_agent(args.agent).policy if args.agent else None
    planner = Planner(world, settings, critic)
    game, rng = Game(world.env_settings), np.random.default_rng(args.seed)

    def plan(obs: np.ndarray) -> int:
        return planner.act(obs, rng)

    policies = {"random": lambda obs: int(rng.integers(game.num_actions)), "planner": plan}
    results = {}
    for name, act in policies.items():
        start, returns, steps = time.perf_counter(), [], 0
        for e in range(args.episodes):
            planner.reset()
            total, length = play_episode(game, args.seed + e, act, args.max_steps)
            returns.append(total)
            steps += length
        returns = np.array(returns)
        results[name] = {
            "mean_return": float(returns.mean()),
            "standard_error": standard_error(returns),
            "steps": float(steps),
            "steps_per_s": steps / (time.perf_counter() - start),
        }
        print(
            f"{name:>8}: return {returns.mean():+.2f} ± {results[name]['standard_error']:.2f} (SE) over "
            f"{args.episodes} episodes (at most {args.max_steps} steps each), "
            f"{results[name]['steps_per_s']:.1f} real steps/s",
            flush=True,
        )
    game.close()
    return results


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    run_cli(cli)
