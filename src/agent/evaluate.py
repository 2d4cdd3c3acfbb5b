"""Score policies in the real game: the trained agent, a random policy and the planner, on the same seeded episodes.

    python -m src.agent.evaluate --agent runs/<agent run> [--episodes 10] [--policies agent,random,planner]
    python -m src.agent.evaluate --world_model runs/<run> --policies random,planner      # no agent: no critic

Every policy plays full real episodes (--max_steps caps them, off by default), episode e seeded seed + e for all.
Reported: each policy's mean return ± its standard error, and whether the agent beats random beyond the noise
(Welch's t > 2). Along the agent's episodes, every --compare_every steps, the imagination is checked for control: the
agent plays --compare_horizon steps inside the world model from the real frames, then the same actions are replayed
in the real game from the same state (emulator snapshot, restored after); the imagined and real returns are compared
(correlation, mean difference). A video shows the agent's first episode beside its imagined counterpart (the model
fed the same actions, re-started from the real frames every --compare_horizon steps).

Writes <out_dir>/<YYYYmmdd-HHMMSS>_<game>_agent_eval/: summary.json, episodes.csv, compare.csv, videos/*.mp4 and
eval.log; with W&B a run of job type "agent-eval" in the agent run's group.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from src.agent.checkpoint import read_agent
from src.agent.learner import to_frames
from src.agent.planner import Planner, PlannerSettings
from src.envs.game import Game
from src.imagination.games import CheckpointWorld
from src.models.rollout import imagine_step, rollout
from src.models.run import find_checkpoint
from src.utils.console import teed_stdout
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.frames import frames_to_float
from src.utils.io import atomic_write_json, check_writable, create_timestamped_dir, json_safe
from src.utils.logging import ENV_MODES, WandbConfig, make_logger
from src.utils.video import rollout_frames, write_video

POLICIES = ("agent", "random", "planner")


def parse_args(argv: list[str] | None):  # noqa: ANN201 (argparse.Namespace)
    p = ArgumentParser(prog="python -m src.agent.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", default=None, help="an agent run folder (python -m src.agent) or its checkpoint")
    p.add_argument("--world_model", default=None, help="the world model for the planner (default: the agent's)")
    p.add_argument("--policies", default=None, help="comma-separated: agent, random, planner (default: all there are)")
    p.add_argument("--episodes", type=int, default=10, help="real episodes per policy")
    p.add_argument("--seed", type=int, default=0, help="episode e of every policy is seeded seed + e")
    p.add_argument("--max_steps", type=int, default=None, help="cap every episode at this many steps (default: none)")
    p.add_argument("--greedy", action="store_true", help="the agent takes its most likely action (default: sampled)")
    p.add_argument("--compare_every", type=int, default=50, help="real steps between imagined-vs-real checks (0: off)")
    p.add_argument("--compare_horizon", type=int, default=15, help="steps each check plays in both")
    p.add_argument(
        "--video_steps", type=int, default=300, help="steps of the agent's first episode in the video (0: no video)"
    )
    for name, default in vars(PlannerSettings()).items():
        p.add_argument(f"--plan_{name}", type=type(default), default=default, help=f"the planner's {name}")
    p.add_argument("--no_critic", action="store_true", help="the planner ignores the agent's critic")
    p.add_argument("--out_dir", default="runs", help="the evaluation's folder is made in here")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU if there is one)")
    p.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: one per core)")
    p.add_argument("--wandb", default="auto", choices=["auto", *sorted(set(ENV_MODES.values()))], help="W&B mode")
    args = p.parse_args(argv)
    if args.agent is None and args.world_model is None:
        p.error("give --agent (an agent run) or --world_model (random and planner only)")
    for flag in ("episodes", "compare_horizon"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag in ("compare_every", "seed", "video_steps"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.max_steps is not None and args.max_steps < 1:
        p.error(f"--max_steps must be >= 1, got {args.max_steps}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    args.planner = PlannerSettings(**{k: getattr(args, f"plan_{k}") for k in vars(PlannerSettings())})
    if problem := args.planner.check():
        p.error(problem)
    given = [s.strip() for s in args.policies.split(",")] if args.policies else None
    available = [name for name in POLICIES if name != "agent" or args.agent is not None]
    args.policies = given or available
    unknown = [s for s in args.policies if s not in POLICIES]
    if unknown or len(set(args.policies)) != len(args.policies):
        p.error(f"--policies takes agent, random and planner, each at most once, got {','.join(args.policies)}")
    if "agent" in args.policies and args.agent is None:
        p.error("--policies agent needs --agent")
    return args


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def play_episode(game: Game, seed: int, act: Callable[[np.ndarray], int], max_steps: int | None, on_step=None):  # noqa: ANN001
    """One real episode: (return, length); on_step(step, obs, action) is called before each step (obs: the frames
    the action is chosen on)."""
    obs, total, steps, done = game.reset(seed), 0.0, 0, False
    while not done and (max_steps is None or steps < max_steps):
        action = act(obs)
        if on_step is not None:
            on_step(steps, obs, action)
        transition = game.step(action)
        obs, total, steps, done = transition.next_obs, total + transition.reward, steps + 1, transition.done
    return total, steps


class Comparison:
    """Imagined vs real returns along the agent's episodes, from the same real state with the same actions."""

    def __init__(self, world: CheckpointWorld, policy: torch.nn.Module, horizon: int) -> None:
        self.world, self.policy, self.horizon = world, policy, horizon
        self.rows: list[dict] = []

    @torch.inference_mode()
    def check(self, game: Game, episode: int, step: int, generator: torch.Generator) -> None:
        w = self.world
        context = frames_to_float(torch.from_numpy(game.obs).to(w.device))[None]
        actions, imagined, alive = [], 0.0, 1.0
        signs = torch.tensor([-1.0, 0.0, 1.0], device=w.device)
        for _ in range(self.horizon):
            action = self.policy.act(to_frames(context), generator)
            next_frame, reward_probs, end_prob = imagine_step(w.model, context, action, w.feedback)
            imagined += alive * float(reward_probs[0] @ signs)
            alive *= 1 - float(end_prob[0])
            context = torch.cat([context[:, 1:], next_frame], dim=1)
            actions.append(int(action[0]))
        snapshot, real, ended = game.snapshot(), 0.0, False
        for action in actions:
            transition = game.step(action)
            real += float(np.sign(transition.reward))
            if transition.done:
                ended = True
                break
        game.restore(snapshot)
        self.rows.append({"episode": episode, "step": step, "imagined": imagined, "real": real, "ended": ended})

    def summary(self) -> dict:
        if not self.rows:
            return {}
        imagined = np.array([r["imagined"] for r in self.rows])
        real = np.array([r["real"] for r in self.rows])
        varied = imagined.std() > 0 and real.std() > 0
        return {
            "checks": len(self.rows),
            "horizon": self.horizon,
            "correlation": float(np.corrcoef(imagined, real)[0, 1]) if varied else float("nan"),
            "mean_imagined": float(imagined.mean()),
            "mean_real": float(real.mean()),
            "mean_difference": float((imagined - real).mean()),
            "mean_abs_difference": float(np.abs(imagined - real).mean()),
            "real_nonzero": int((real != 0).sum()),
            "sign_agreement_where_real_nonzero": float(
                (np.sign(np.round(imagined[real != 0])) == np.sign(real[real != 0])).mean()
            )
            if (real != 0).any()
            else float("nan"),
        }


@torch.inference_mode()
def counterpart(world: CheckpointWorld, frames: list[np.ndarray], actions: list[int], sync: int) -> np.ndarray:
    """The model's frames for a real stretch: fed the real actions open loop, re-started from the real frames every
    `sync` steps. frames: the real (T, H, W) stacks before each action. Returns (K, H, W) float in [0, 1]."""
    out = []
    for start in range(0, len(actions), sync):
        context = frames_to_float(torch.from_numpy(frames[start]).to(world.device))[None]
        chunk = torch.tensor(actions[start : start + sync], device=world.device)[None]
        out.append(rollout(world.model, context, chunk, world.feedback)[0].float().cpu().numpy())
    return np.concatenate(out)


def evaluate_agent(argv: list[str] | None = None) -> dict:
    """What main does, from Python: returns summary.json's contents."""
    args = parse_args(argv)
    with teed_stdout() as tee:
        return evaluate(args, tee)


def main(argv: list[str] | None = None) -> int:
    evaluate_agent(argv)
    return 0


def evaluate(args, tee) -> dict:  # noqa: ANN001 (argparse.Namespace, Tee)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    agent = read_agent(args.agent) if args.agent is not None else None
    world_file = find_checkpoint(args.world_model or agent.world_model, "weights", "--world_model")
    world = CheckpointWorld.load(world_file, args.device)
    if agent is not None and agent.env_settings.game != world.env_settings.game:
        raise UserError(
            f"--world_model plays {world.env_settings.game}, the agent {agent.env_settings.game}: give a model of "
            "the agent's game"
        )
    settings = agent.env_settings if agent is not None else world.env_settings
    check_writable(args.out_dir, "--out_dir")
    out = create_timestamped_dir(args.out_dir, f"{settings.game}_agent_eval", ("videos",), "--out_dir")
    tee.open(out / "eval.log")
    policy = agent.policy.to(world.device) if agent is not None else None
    critic = policy if policy is not None and not args.no_critic else None
    planner = Planner(world, args.planner, critic)
    comparison = Comparison(world, policy, args.compare_horizon) if policy is not None else None
    print(
        f"{settings.game}: {', '.join(args.policies)} over {args.episodes} real episodes each (seeds {args.seed}.."
        f"{args.seed + args.episodes - 1}{'' if args.max_steps is None else f', at most {args.max_steps} steps'}); "
        f"world model {world_file}" + (f", agent {agent.file}" if agent else "")
    )
    if "planner" in args.policies:
        s = args.planner
        print(
            f"planner: CEM, {s.iterations} x {s.population} sequences of {s.decisions} actions held {s.repeat} steps "
            f"({s.imagined_steps} imagined steps a plan, one plan every {s.repeat} real steps), "
            + ("the agent's critic at the end" if critic is not None else "no critic")
        )
    game = Game(settings)
    results, rows = {}, []
    video: tuple[list, list] = ([], [])
    for name in args.policies:
        returns, lengths, start = [], [], time.perf_counter()
        for e in range(args.episodes):
            seed = args.seed + e
            rng, generator = np.random.default_rng(seed), torch.Generator(device=world.device).manual_seed(seed)
            on_step = None
            if name == "random":
                act = lambda obs: int(rng.integers(game.num_actions))  # noqa: E731
            elif name == "planner":
                planner.reset()
                act = lambda obs: planner.act(obs, rng)  # noqa: E731
            else:

                def act(obs: np.ndarray) -> int:
                    frames = torch.from_numpy(obs).to(world.device)[None]
                    return int(policy.act(frames, generator, greedy=args.greedy)[0])

                def on_step(step: int, obs: np.ndarray, action: int, e: int = e) -> None:
                    if e == 0 and step < args.video_steps:
                        video[0].append(obs)
                        video[1].append(action)
                    if comparison is not None and args.compare_every and step % args.compare_every == 0 and step:
                        comparison.check(game, e, step, generator)

            total, length = play_episode(game, seed, act, args.max_steps, on_step)
            returns.append(total)
            lengths.append(length)
            rows.append({"policy": name, "episode": e, "seed": seed, "return": total, "length": length})
            print(f"  {name} episode {e} (seed {seed}): return {total:+.0f} in {length} steps", flush=True)
        returns_a = np.array(returns)
        results[name] = {
            "episodes": len(returns),
            "mean_return": float(returns_a.mean()),
            "standard_error": standard_error(returns_a),
            "min_return": float(returns_a.min()),
            "max_return": float(returns_a.max()),
            "mean_length": float(np.mean(lengths)),
            "real_steps_per_s": sum(lengths) / (time.perf_counter() - start),
            "returns": returns,
        }
    game.close()

    summary = {"game": settings.game, "world_model": str(world_file), "agent": str(agent.file) if agent else None}
    summary["policies"] = results
    print(
        f"\n{'policy':<8} {'episodes':>8} {'mean return':>12} {'± SE':>7} {'min':>6} {'max':>6} {'length':>8} "
        f"{'steps/s':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<8} {r['episodes']:>8} {r['mean_return']:>+12.2f} {r['standard_error']:>7.2f} "
            f"{r['min_return']:>+6.0f} {r['max_return']:>+6.0f} {r['mean_length']:>8.0f} {r['real_steps_per_s']:>8.1f}"
        )
    for name in ("agent", "planner"):
        if name in results and "random" in results:
            a, r = results[name], results["random"]
            spread = math.hypot(a["standard_error"], r["standard_error"])
            t = (a["mean_return"] - r["mean_return"]) / spread if spread > 0 else float("nan")
            verdict = "beats random" if t > 2 else "worse than random" if t < -2 else "no different from random"
            summary[f"{name}_vs_random"] = {
                "difference": a["mean_return"] - r["mean_return"],
                "t": t,
                "beats": bool(t > 2),
                "worse": bool(t < -2),
            }
            print(
                f"{name} - random: {a['mean_return'] - r['mean_return']:+.2f} (Welch t {t:+.2f}): {verdict}"
                + (" beyond the noise" if abs(t) > 2 else " within the noise")
            )
    if comparison is not None and comparison.rows:
        summary["imagined_vs_real"] = comparison.summary()
        c = summary["imagined_vs_real"]
        print(
            f"imagined vs real returns over {c['horizon']} steps ({c['checks']} checks along the agent's episodes): "
            f"correlation {c['correlation']:.2f}, mean imagined {c['mean_imagined']:+.3f} vs real "
            f"{c['mean_real']:+.3f} "
            f"(difference {c['mean_difference']:+.3f}, mean |difference| {c['mean_abs_difference']:.3f})"
        )
        with open(out / "compare.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(comparison.rows[0]))
            writer.writeheader()
            writer.writerows(comparison.rows)
    with open(out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    video_path = None
    if len(video[1]) > 1:  # the real frame after action k is the newest of the stack before action k + 1
        imagined = counterpart(world, video[0][:-1], video[1][:-1], args.compare_horizon)
        real = np.stack([frames[-1] for frames in video[0][1:]]) / 255.0
        video_path = write_video(out / "videos" / "agent_real_vs_imagined.mp4", rollout_frames(real, imagined))
    atomic_write_json(out / "summary.json", json_safe(summary))
    logger = make_logger(
        WandbConfig(mode=args.wandb),
        out,
        out.name,
        {k: v for k, v in vars(args).items() if k != "planner"},
        group=agent.file.parent.parent.name if agent else None,
        job_type="agent-eval",
        setting="--wandb",
    )
    logger.log(
        {f"{name}/{k}": v for name, r in results.items() for k, v in r.items() if k != "returns"}
        | {f"imagined_vs_real/{k}": v for k, v in summary.get("imagined_vs_real", {}).items()},
        0,
    )
    if video_path is not None:
        logger.log_video("agent/real_vs_imagined", video_path, 0)
    logger.close()
    print(f"results in {out}")
    return summary


if __name__ == "__main__":
    run_cli(main)
