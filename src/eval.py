"""Evaluate a checkpoint: open-loop rollouts against the real game, per step ahead, with baselines.

    python -m src.eval --checkpoint runs/<run>/checkpoints/best.pt --game Pong [--horizon 50] [--episodes 4]

The model is rebuilt from the checkpoint alone. By default it plays fresh episodes in the real game with the
checkpoint's preprocessing (random policy, a seed other than the training data's); from many start points it
predicts `horizon` frames open loop, feeding its own predictions back with the true actions. Writes
<out_dir>/<YYYYmmdd-HHMMSS>_<game>_eval/: summary.json, metrics.csv, plots/*.png, videos/*.mp4 and *.gif.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import nn

from src.config import WandbConfig
from src.dataset.atari import EnvSettings, make_env, resolve_game
from src.dataset.offline_dataset import frames_to_float
from src.dataset.policies import RandomPolicy
from src.dataset.shards import ShardedDataset, Steps
from src.models.rollout import rollout
from src.utils.checkpoint import load_checkpoint, model_from_checkpoint
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import atomic_write_bytes, atomic_write_json, create_timestamped_dir
from src.utils.logging import check_wandb, make_logger
from src.utils.metrics import mse_per_sample, ssim
from src.utils.plots import horizon_plot, save_figure
from src.utils.video import rollout_frames, write_video

HEADLINE_STEPS = (1, 10, 50)  # steps ahead reported in summary.json's ratios
ACTION_GAP_STEPS = (1, 10)


@dataclass
class Windows:
    """N open-loop test cases: context (N, T, H, W) uint8, actions (N, K) int64, truth (N, K, H, W) uint8."""

    context: np.ndarray
    actions: np.ndarray
    truth: np.ndarray

    @classmethod
    def from_steps(cls, windows: list[Steps]) -> Windows:
        return cls(np.stack([w.obs[0] for w in windows]), np.stack([w.action for w in windows]),
                   np.stack([w.next_obs[:, 0] for w in windows]))


# ------------------------------------------------------------------------------------------ test cases


def play_episodes(settings: EnvSettings, episodes: int, seed: int) -> list[Steps]:
    """Fresh episodes of the real game with uniformly random actions, one Steps per episode."""
    env = make_env(settings)
    policy = RandomPolicy(int(env.action_space.n), 1, np.random.SeedSequence(seed))
    played = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        rows: dict[str, list] = {k: [] for k in ("obs", "action", "next_obs", "done", "reward")}
        done = False
        while not done:
            action = int(policy.act(obs[None], np.zeros(1, dtype=int))[0])
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for key, value in zip(rows, (obs, action, next_obs[-1:], done, reward)):
                rows[key].append(value)
            obs = next_obs
        n = len(rows["action"])
        played.append(Steps(obs=np.stack(rows["obs"]), action=np.array(rows["action"], dtype=np.int64),
                            next_obs=np.stack(rows["next_obs"]), done=np.array(rows["done"]),
                            reward=np.array(rows["reward"], dtype=np.float32), episode=np.full(n, e)))
    env.close()
    return played


def spread(n: int, count: int) -> np.ndarray:
    """`count` indices over range(n), the middles of equal segments (all of them if count >= n).

    Middles rather than both ends: an episode's first step (a reset) is rare in play but would be in every
    episode's sample, and dominated the mean (one reset transition weighed 4x the copy-last MSE of 63 others)."""
    count = min(count, n)
    return ((np.arange(count) + 0.5) * n / count).astype(int) if count > 0 else np.zeros(0, dtype=int)


def windows_from_episodes(episodes: list[Steps], horizon: int, starts_per_episode: int) -> Windows:
    cases = []
    for ep in episodes:
        for s in spread(len(ep.action) - horizon + 1, starts_per_episode):
            cases.append(Steps(*(getattr(ep, f)[s : s + horizon] for f in ("obs", "action", "next_obs", "done", "reward", "episode"))))
    if not cases:
        raise UserError(f"no episode lasted the {horizon} steps of --horizon; lower it or play more --episodes")
    return Windows.from_steps(cases)


def windows_from_dataset(dataset: ShardedDataset, horizon: int, count: int) -> Windows:
    starts = dataset.window_starts(horizon)
    if len(starts) == 0:
        raise UserError(f"'{dataset.root}' has no window of {horizon} consecutive steps; lower --horizon")
    return Windows.from_steps([dataset.steps(int(starts[i]), horizon) for i in spread(len(starts), count)])


# ------------------------------------------------------------------------------------------ metrics


def per_step_errors(prediction: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """prediction, truth: (B, K, H, W) -> {"mse": (B, K), "ssim": (B, K)}."""
    b, k, h, w = truth.shape
    flat_prediction, flat_truth = prediction.reshape(b * k, h, w), truth.reshape(b * k, h, w)  # (B*K, H, W)
    return {"mse": mse_per_sample(flat_prediction, flat_truth).view(b, k), "ssim": ssim(flat_prediction, flat_truth).view(b, k)}


def evaluate(model: nn.Module, windows: Windows, batch_size: int, device: torch.device, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per-case, per-step errors of the model, the copy-last-frame baseline and the model with shuffled actions.

    Returns {method: {"mse": (N, K), "ssim": (N, K)}}; the pure computation, no I/O.
    """
    n = len(windows.actions)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = windows.actions.copy()
    shuffled[order] = windows.actions[np.roll(order, -1)]  # each case gets another case's actions, never its own
    results: dict[str, dict[str, list]] = {m: {"mse": [], "ssim": []} for m in ("model", "copy_last", "model_shuffled_actions")}
    model.eval()
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        context = frames_to_float(torch.from_numpy(windows.context[sl]).to(device))  # (B, T, H, W)
        truth = frames_to_float(torch.from_numpy(windows.truth[sl]).to(device))  # (B, K, H, W)
        predictions = {
            "model": rollout(model, context, torch.from_numpy(windows.actions[sl]).to(device)),
            "copy_last": context[:, -1:].expand_as(truth),
            "model_shuffled_actions": rollout(model, context, torch.from_numpy(shuffled[sl]).to(device)),
        }
        for method, prediction in predictions.items():
            for metric, value in per_step_errors(prediction, truth).items():
                results[method][metric].append(value.cpu().numpy())
    return {m: {k: np.concatenate(v) for k, v in metrics.items()} for m, metrics in results.items()}


def psnr_of_mean(mse: np.ndarray) -> np.ndarray:
    """PSNR in dB of the MSE averaged over cases (a per-case PSNR is infinite where a frame is copied exactly)."""
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def summarise(errors: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Mean over cases per step: {"mse": {method: [K]}, "psnr": ..., "ssim": ...}."""
    out: dict[str, dict[str, list[float]]] = {"mse": {}, "psnr": {}, "ssim": {}}
    for method, metrics in errors.items():
        mse = metrics["mse"].mean(0)
        out["mse"][method] = mse.tolist()
        out["psnr"][method] = psnr_of_mean(mse).tolist()
        out["ssim"][method] = metrics["ssim"].mean(0).tolist()
    return out


def headline(curves: dict[str, dict[str, list[float]]], horizon: int) -> tuple[dict[str, float], dict[str, float]]:
    """(model MSE / copy-last MSE at steps 1, 10, 50; shuffled-action MSE / true-action MSE at steps 1, 10), within the horizon."""
    mse = curves["mse"]
    ratio = {str(k): mse["model"][k - 1] / max(mse["copy_last"][k - 1], 1e-12) for k in HEADLINE_STEPS if k <= horizon}
    gap = {str(k): mse["model_shuffled_actions"][k - 1] / max(mse["model"][k - 1], 1e-12) for k in ACTION_GAP_STEPS if k <= horizon}
    return ratio, gap


# ------------------------------------------------------------------------------------------ outputs


LABELS = {"model": "model", "copy_last": "copy last frame", "model_shuffled_actions": "model, shuffled actions"}


def write_outputs(out: Path, summary: dict, curves: dict, model: nn.Module, windows: Windows, videos: int, device: torch.device) -> dict[str, Path]:
    """summary.json, metrics.csv, plots and rollout videos; returns the main paths."""
    atomic_write_json(out / "summary.json", summary)
    horizon = len(curves["mse"]["model"])
    table = io.StringIO(newline="")  # built in memory, then written atomically like every other output
    columns = [f"{method}_{metric}" for metric in ("mse", "psnr", "ssim") for method in LABELS]
    writer = csv.writer(table)
    writer.writerow(["step", *columns])
    for k in range(horizon):
        writer.writerow([k + 1, *(f"{curves[c.rsplit('_', 1)[1]][c.rsplit('_', 1)[0]][k]:.6g}" for c in columns)])
    atomic_write_bytes(out / "metrics.csv", table.getvalue().encode())
    paths = {}
    for metric, ylabel, log_y in (("mse", "MSE per pixel (frames in [0, 1])", True), ("psnr", "PSNR (dB)", False), ("ssim", "SSIM", False)):
        figure = horizon_plot({LABELS[m]: v for m, v in curves[metric].items()}, ylabel,
                              f"{summary['game']}: open-loop {metric.upper()} over {summary['starts']} rollouts", log_y=log_y)
        paths[metric] = out / "plots" / f"{metric}_vs_horizon.png"
        save_figure(figure, paths[metric])
    chosen = spread(len(windows.actions), videos)
    if len(chosen) == 0:
        return paths
    context = frames_to_float(torch.from_numpy(windows.context[chosen]).to(device))
    predicted = rollout(model, context, torch.from_numpy(windows.actions[chosen]).to(device)).cpu().numpy()
    for v, case in enumerate(chosen):
        frames = rollout_frames(windows.truth[case].astype(np.float32) / 255.0, predicted[v])
        for suffix in ("mp4", "gif"):
            paths[f"video_{v}_{suffix}"] = write_video(out / "videos" / f"rollout_{v}.{suffix}", frames)
    return paths


# ------------------------------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a .pt file written by src.train")
    p.add_argument("--game", required=True, help="the game the checkpoint was trained on (a check), e.g. Pong")
    p.add_argument("--episodes", type=int, default=4, help="fresh episodes to play (default 4)")
    p.add_argument("--starts_per_episode", type=int, default=16, help="rollout start points per episode, spread evenly (default 16)")
    p.add_argument("--horizon", type=int, default=50, help="steps predicted open loop from each start (default 50)")
    p.add_argument("--seed", type=int, default=None, help="seed of the played episodes (default: the training data's seed + 1)")
    p.add_argument("--data_dir", default=None, help="evaluate on windows of a recorded dataset instead of fresh episodes")
    p.add_argument("--out_dir", default="runs", help="where <timestamp>_<game>_eval/ goes (default runs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch_size", type=int, default=64, help="rollouts computed together (default 64)")
    p.add_argument("--videos", type=int, default=4, help="rollouts written as MP4 and GIF (default 4)")
    p.add_argument("--wandb_mode", choices=("online", "offline", "disabled"), default="disabled")
    args = p.parse_args(argv)
    for name in ("episodes", "starts_per_episode", "horizon", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.videos < 0:
        raise UserError(f"--videos must be >= 0, got {args.videos}")

    state = load_checkpoint(args.checkpoint)
    env_info = state["env"]
    game = resolve_game(args.game)
    if game != env_info["game"]:
        raise UserError(f"--game {args.game} differs from the checkpoint's game {env_info['game']}; evaluate it on {env_info['game']}")
    wandb_cfg = WandbConfig(mode=args.wandb_mode, project=state["config"]["experiment"]["wandb"]["project"],
                            entity=state["config"]["experiment"]["wandb"]["entity"])
    check_wandb(wandb_cfg)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model_from_checkpoint(state).to(device)
    seed = args.seed if args.seed is not None else env_info.get("seed", 0) + 1

    start = time.perf_counter()
    if args.data_dir:
        dataset = ShardedDataset(args.data_dir)
        if dataset.game != game:
            raise UserError(f"--data_dir holds {dataset.game} data, the checkpoint is for {game}")
        windows = windows_from_dataset(dataset, args.horizon, args.episodes * args.starts_per_episode)
        source = str(dataset.root)
    else:
        episodes = play_episodes(EnvSettings.from_dict(env_info["env"]), args.episodes, seed)
        windows = windows_from_episodes(episodes, args.horizon, args.starts_per_episode)
        source = f"{args.episodes} fresh episodes, seed {seed}"
    print(f"evaluating {args.checkpoint} (step {state['step']}) on {len(windows.actions)} rollouts of {args.horizon} steps "
          f"from {source}", flush=True)
    out = create_timestamped_dir(args.out_dir, f"{game}_eval", ("plots", "videos"), "--out_dir")  # before the work: fail fast
    errors = evaluate(model, windows, args.batch_size, device, seed)
    curves = summarise(errors)
    ratio, gap = headline(curves, args.horizon)
    summary = {"game": game, "checkpoint": str(args.checkpoint), "checkpoint_step": state["step"], "source": source,
               "horizon": args.horizon, "episodes": args.episodes if not args.data_dir else None, "starts": len(windows.actions),
               "seed": seed, **curves, "mse_ratio_to_copy": ratio, "action_gap": gap,
               "seconds": round(time.perf_counter() - start, 2)}
    paths = write_outputs(out, summary, curves, model, windows, args.videos, device)

    logger = make_logger(wandb_cfg, out, out.name, {"eval": vars(args), "checkpoint_config": state["config"]})
    logger.log({f"eval/mse_ratio_to_copy_h{k}": v for k, v in ratio.items()} | {f"eval/action_gap_h{k}": v for k, v in gap.items()}, step=0)
    for key, path in paths.items():
        if key in ("mse", "psnr", "ssim"):
            logger.log_image(f"eval/{key}_vs_horizon", iio.imread(path)[..., :3], step=0)
        elif key.endswith("mp4"):
            logger.log_video(f"eval/{key.removesuffix('_mp4')}", path, step=0)
    logger.close()

    ratios = ", ".join(f"h={k}: {v:.3f}" for k, v in ratio.items())
    gaps = ", ".join(f"h={k}: {v:.3f}" for k, v in gap.items())
    print(f"model MSE / copy-last MSE  {ratios}\naction gap (shuffled / true)  {gaps}\n"
          f"plot   {paths['mse']}\nvideo  {paths.get('video_0_mp4', '-')}\nall    {out}", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
