"""What each action does to the return, imagined and real, from the same real states: how far a world model's
rewards can be trusted for control before an agent learns in it.

    python examples/action_effects.py --checkpoint runs/<run> [--starts 96] [--horizons 5,8,15] [--seed 0]

Random play of the real game stops at --starts states (20-60 random steps apart, an emulator snapshot at each); from
each, every action is held for the longest horizon twice: inside the model from the real frames (the expected reward
signs, p(+1) - p(-1), summed) and in the real game from the snapshot (the reward signs summed). Prints, per action
and horizon, the mean imagined and the mean real return. An action whose imagined return beats the others while the
real ones tie is what an agent will learn to exploit (docs/agent.md, "What the Pong agent learned").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.agent.learner import Dreams  # noqa: E402
from src.envs.game import Game  # noqa: E402
from src.imagination.games import CheckpointWorld  # noqa: E402
from src.utils.errors import ArgumentParser, run_cli  # noqa: E402
from src.utils.frames import frames_to_float  # noqa: E402


def real_states(game: Game, starts: int, rng: np.random.Generator, seed: int) -> tuple[list[dict], np.ndarray]:
    """Snapshots of random play and their frames (N, T, H, W) uint8."""
    snapshots, frames, episode = [], [], 0
    game.reset(seed)
    while len(snapshots) < starts:
        for _ in range(int(rng.integers(20, 60))):
            if game.step(int(rng.integers(game.num_actions))).done:
                episode += 1
                game.reset(seed + episode)
        snapshots.append(game.snapshot())
        frames.append(game.obs.copy())
    return snapshots, np.stack(frames)


def main(argv: list[str] | None = None) -> dict[str, dict[int, tuple[float, float]]]:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a world-model run folder or .pt with an event head")
    p.add_argument("--starts", type=int, default=96, help="real states to start from")
    p.add_argument("--horizons", default="5,8,15", help="steps ahead to report (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    try:
        horizons = sorted({int(h) for h in args.horizons.split(",")})
    except ValueError:
        p.error(f"--horizons takes comma-separated step counts, got {args.horizons!r}")
    if args.starts < 1 or horizons[0] < 1:
        p.error("--starts and every horizon must be >= 1")
    world = CheckpointWorld.load(args.checkpoint, args.device)
    game, longest = Game(world.env_settings), horizons[-1]
    snapshots, frames = real_states(game, args.starts, np.random.default_rng(args.seed), args.seed)
    dreams = Dreams(world, None, args.starts, longest)
    results = {}
    for action, meaning in enumerate(world.action_meanings):
        context, imagined = frames_to_float(torch.from_numpy(frames).to(world.device)), []
        for _ in range(longest):
            context, rewards, _ = dreams.step(context, torch.full((args.starts,), action, device=world.device))
            imagined.append(rewards.cpu().numpy())
        imagined = np.cumsum(imagined, axis=0)  # (K, N)
        real = np.zeros((longest, args.starts))
        for i, snapshot in enumerate(snapshots):
            game.restore(snapshot)
            total, ended = 0.0, False
            for k in range(longest):
                if not ended:
                    transition = game.step(action)
                    total, ended = total + np.sign(transition.reward), transition.done
                real[k, i] = total
        results[meaning] = {h: (float(imagined[h - 1].mean()), float(real[h - 1].mean())) for h in horizons}
        print(
            f"{action:>2} {meaning:>14}: "
            + "   ".join(f"h{h} imagined {im:+.3f} real {re:+.3f}" for h, (im, re) in results[meaning].items()),
            flush=True,
        )
    game.close()
    return results


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    run_cli(cli)
