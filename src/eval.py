"""Evaluate a checkpoint: open-loop rollouts against the real game, per step ahead, with baselines.

    python -m src.eval --checkpoint runs/<run> [--horizon 50] [--episodes 4]     # its checkpoints/best.pt

The model is rebuilt from the checkpoint alone. By default it plays fresh episodes in the real game with the
checkpoint's preprocessing (random policy, a seed other than the training data's); from many start points it
predicts `horizon` frames open loop, feeding its own predictions back with the true actions. Writes
<out_dir>/<YYYYmmdd-HHMMSS>_<game>_eval/: summary.json, metrics.csv, plots/*.png, videos/*.mp4 and *.gif, and eval.log
(what it printed). With W&B, the evaluation is a run of job type "eval" in the training run's project and group.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings, resolve_game
from src.envs.game import Steps, play_episodes
from src.models.checkpoint import find_checkpoint_file, model_config, model_from_checkpoint, read_checkpoint
from src.models.diffusion import is_stochastic, seed_sampling
from src.models.events import EventCounts, has_events
from src.models.rollout import FEEDBACK, Feedback, imagine, rollout
from src.utils.console import Tee, teed_stdout
from src.utils.device import choose_device
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.frames import frames_to_float
from src.utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    check_apart,
    check_outside_datasets,
    check_writable,
    create_timestamped_dir,
)
from src.utils.logging import WANDB_MODES, WandbConfig, check_wandb, make_logger
from src.utils.metrics import STEP_METRICS
from src.utils.plots import horizon_plot, save_figure
from src.utils.video import write_rollout_videos

METHODS = {
    "model": "model",
    "copy_last": "copy last frame",
    "model_shuffled_actions": "model, shuffled actions",
    "model_mean": "model, mean of its samples",
}  # name: label; model_mean only for a stochastic model (edm)
HEADLINE_STEPS = (1, 10, 50, 100)  # steps ahead reported in summary.json's ratios
ACTION_GAP_STEPS = (1, 10)
EVENT_RATES = ("reward_sign_accuracy", "false_reward_rate", "end_precision", "end_recall")  # EventCounts.rates()
EVENT_HEADLINE_STEPS = (1, 10)


@dataclass
class Windows:
    """N open-loop test cases: context (N, T, H, W) uint8, actions (N, K) int64, truth (N, K, H, W) uint8."""

    context: np.ndarray
    actions: np.ndarray
    truth: np.ndarray
    rewards: np.ndarray  # (N, K) float32: the real rewards

    @classmethod
    def from_steps(cls, windows: list[Steps]) -> Windows:
        return cls(
            np.stack([w.obs[0] for w in windows]),
            np.stack([w.action for w in windows]),
            np.stack([w.next_obs[:, 0] for w in windows]),
            np.stack([w.reward for w in windows]),
        )


# ------------------------------------------------------------------------------------------ test cases


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
            cases.append(
                Steps(
                    *(
                        getattr(ep, f)[s : s + horizon]
                        for f in ("obs", "action", "next_obs", "done", "reward", "episode")
                    )
                )
            )
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
    """prediction, truth: (B, K, H, W) -> {metric: (B, K)} for every metric of STEP_METRICS."""
    b, k, h, w = truth.shape
    flat_prediction, flat_truth = prediction.reshape(b * k, h, w), truth.reshape(b * k, h, w)  # (B*K, H, W)
    return {name: metric.per_frame(flat_prediction, flat_truth).view(b, k) for name, metric in STEP_METRICS.items()}


def evaluate(
    model: nn.Module,
    windows: Windows,
    batch_size: int,
    device: torch.device,
    seed: int,
    feedback: Feedback = Feedback("uint8"),
    progress: bool = False,
    samples: int = 1,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-case, per-step errors of the model, the copy-last-frame baseline and the model with shuffled actions.

    A stochastic model (edm) rolls out `samples` times from every start, its sampling seeded with `seed`: "model" is
    then the mean of the metric over the samples (what one sample scores), and with samples > 1 "model_mean" scores
    the mean frame of the samples (what the MSE rewards); the shuffled actions roll out once.
    Returns {method: {metric: (N, K)}} for every metric of STEP_METRICS, and for a model with an event head
    {"imagined": {"rewards": (N, K)}}, the reward signs it predicted along the (first sample's) rollouts; the pure
    computation, no I/O but a progress bar on stderr with `progress` (a long evaluation on a CPU takes minutes).
    """
    n = len(windows.actions)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = windows.actions.copy()
    shuffled[order] = windows.actions[np.roll(order, -1)]  # each case gets another case's actions, never its own
    samples = samples if is_stochastic(model) else 1
    methods = [m for m in METHODS if m != "model_mean" or samples > 1]
    results: dict[str, dict[str, list]] = {m: {name: [] for name in STEP_METRICS} for m in methods}
    imagined_rewards = []
    model.eval()
    seed_sampling(model, seed)
    bar = tqdm(
        total=n * samples, unit="rollout", desc="rollouts", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        context = frames_to_float(torch.from_numpy(windows.context[sl]).to(device))  # (B, T, H, W)
        truth = frames_to_float(torch.from_numpy(windows.truth[sl]).to(device))  # (B, K, H, W)
        actions = torch.from_numpy(windows.actions[sl]).to(device)
        drawn = []
        for i in range(samples):
            imagined = imagine(model, context, actions, feedback)
            if i == 0 and imagined.rewards is not None:
                imagined_rewards.append(imagined.rewards.cpu().numpy())
            drawn.append(imagined.frames)
            bar.update(len(truth))
        scored = {
            "model": [per_step_errors(frames, truth) for frames in drawn],
            "copy_last": [per_step_errors(context[:, -1:].expand_as(truth), truth)],
            "model_shuffled_actions": [
                per_step_errors(rollout(model, context, torch.from_numpy(shuffled[sl]).to(device), feedback), truth)
            ],
        }
        if samples > 1:
            scored["model_mean"] = [per_step_errors(torch.stack(drawn).mean(0), truth)]
        for method, errors in scored.items():
            for metric in STEP_METRICS:
                results[method][metric].append(torch.stack([e[metric] for e in errors]).mean(0).cpu().numpy())
    bar.close()
    out = {m: {k: np.concatenate(v) for k, v in metrics.items()} for m, metrics in results.items()}
    return out | ({"imagined": {"rewards": np.concatenate(imagined_rewards)}} if imagined_rewards else {})


def summarise(errors: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Per step over the cases, as each metric of STEP_METRICS aggregates them: {metric: {method: [K]}}, for the
    methods that `errors` holds."""
    return {
        name: {method: metric.over_cases(errors[method][name]).tolist() for method in METHODS if method in errors}
        for name, metric in STEP_METRICS.items()
    }


# ------------------------------------------------------------------------------------------ rewards and ends


def return_fidelity(imagined: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Returns over each rollout's steps, imagined (the predicted reward signs) against real (the real rewards'
    signs), under the same actions from the same starts. imagined, real: (N, K)."""
    steps = imagined.shape[1]
    imagined, real = imagined.sum(1), np.sign(real).sum(1)
    diff = imagined - real
    both_vary = imagined.std() > 0 and real.std() > 0
    return {
        "rollouts": len(diff),
        "steps": steps,
        "real_mean": float(real.mean()),
        "real_std": float(real.std()),
        "imagined_mean": float(imagined.mean()),
        "imagined_std": float(imagined.std()),
        "difference_mean": float(diff.mean()),
        "difference_std": float(diff.std()),
        "difference_abs_mean": float(np.abs(diff).mean()),
        "correlation": float(np.corrcoef(imagined, real)[0, 1]) if both_vary else None,
    }


def event_cases(episodes: list[Steps], horizon: int) -> tuple[Windows, np.ndarray, np.ndarray] | None:
    """Open-loop cases that reach every reward and every end of `episodes` at each step ahead 1..horizon: for an
    event at step i, the cases starting at i - h + 1 for h = 1..horizon (each start once). Cases that run past their
    episode's end are padded. Returns (the windows, the real ends (N, horizon) bool, which steps are real (N, horizon)),
    or None when the episodes hold no reward and no end."""
    context, actions, rewards, ends, valid = [], [], [], [], []
    for ep in episodes:
        n = len(ep.action)
        events = np.flatnonzero((ep.reward != 0) | ep.done)
        starts = np.unique(np.clip((events[:, None] - np.arange(horizon)[None, :]).ravel(), 0, None))
        for s in starts:
            length = min(horizon, n - s)
            pad = lambda x: np.concatenate([x[s : s + length], np.zeros(horizon - length, dtype=x.dtype)])  # noqa: E731
            context.append(ep.obs[s])
            actions.append(pad(ep.action))
            rewards.append(pad(ep.reward))
            ends.append(pad(ep.done))
            valid.append(np.arange(horizon) < length)
    if not context:
        return None
    frames = np.zeros(
        (len(context), horizon, *context[0].shape[1:]), dtype=np.uint8
    )  # truth frames are not scored here
    return Windows(np.stack(context), np.stack(actions), frames, np.stack(rewards)), np.stack(ends), np.stack(valid)


def event_curves(
    model: nn.Module,
    cases: tuple[Windows, np.ndarray, np.ndarray],
    episodes: int,
    batch_size: int,
    device: torch.device,
    feedback: Feedback,
    progress: bool = False,
) -> dict[str, Any]:
    """Per step ahead 1..horizon of open-loop rollouts against the real game: the reward sign accuracy on the steps
    with a real reward, the false-reward rate on those without, the end's precision and recall, and what they were
    counted on. `cases` are `event_cases` of `episodes` episodes: every reward and every end at every step ahead;
    `progress`: a bar on stderr, in rollouts."""
    windows, real_ends, valid = cases
    horizon = real_ends.shape[1]
    counts = [EventCounts() for _ in range(horizon)]
    model.eval()
    bar = tqdm(
        total=len(windows.actions),
        unit="rollout",
        desc="rewards and ends",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for start in range(0, len(windows.actions), batch_size):
        sl = slice(start, start + batch_size)
        context = frames_to_float(torch.from_numpy(windows.context[sl]).to(device))
        imagined = imagine(model, context, torch.from_numpy(windows.actions[sl]).to(device), feedback)
        rewards, ends = imagined.rewards.cpu(), imagined.end_probs.cpu() > 0.5  # (B, horizon), once per batch
        for h in range(horizon):
            keep = torch.from_numpy(valid[sl, h])
            counts[h].add(
                rewards[keep, h],
                ends[keep, h],
                torch.from_numpy(windows.rewards[sl, h])[keep],
                torch.from_numpy(real_ends[sl, h])[keep],
            )
        bar.update(len(rewards))
    bar.close()
    rates = [c.rates() for c in counts]
    curves = {
        key: [None if math.isnan(r[key]) else r[key] for r in rates] for key in EVENT_RATES
    }  # null: nothing to count
    return {
        "horizon": horizon,
        "episodes": episodes,
        "rollouts": len(windows.actions),
        **curves,
        "reward_steps": [int(c.reward_steps) for c in counts],
        "quiet_steps": [int(c.quiet_steps) for c in counts],
        "real_ends": [int(c.real_ends) for c in counts],
        "predicted_ends": [int(c.predicted_ends) for c in counts],
    }


def episodes_from_dataset(dataset: ShardedDataset, count: int) -> list[Steps]:
    """`count` whole recorded episodes that end in the data (spread over the dataset), as Steps."""
    done, episode = dataset.column("done"), dataset.column("episode")
    ends = np.flatnonzero(done)
    chosen = []
    for i in spread(len(ends), count):
        end = int(ends[i])
        others = np.flatnonzero(episode[: end + 1] != episode[end])
        first = max(
            int(ends[i - 1]) + 1 if i > 0 else 0,
            int(dataset.offsets[dataset.locate(end)[0]]),
            int(others[-1]) + 1 if len(others) else 0,
        )  # after the last end, in the end's shard and episode
        chosen.append(dataset.steps(first, end - first + 1))
    return chosen


def headline(
    curves: dict[str, dict[str, list[float]]], horizon: int, method: str = "model"
) -> tuple[dict[str, float], dict[str, float]]:
    """(model MSE / copy-last MSE at steps 1, 10, 50, 100; shuffled-action MSE / true-action MSE at steps 1, 10), within
    the horizon; `method` model_mean: the ratios of the mean of a stochastic model's samples."""
    mse = curves["mse"]
    ratio = {str(k): mse[method][k - 1] / max(mse["copy_last"][k - 1], 1e-12) for k in HEADLINE_STEPS if k <= horizon}
    gap = {
        str(k): mse["model_shuffled_actions"][k - 1] / max(mse["model"][k - 1], 1e-12)
        for k in ACTION_GAP_STEPS
        if k <= horizon
    }
    return ratio, gap


# ------------------------------------------------------------------------------------------ outputs


def write_outputs(
    out: Path,
    summary: dict,
    curves: dict,
    model: nn.Module,
    windows: Windows,
    videos: int,
    device: torch.device,
    feedback: Feedback = Feedback("uint8"),
) -> dict[str, Path]:
    """summary.json, metrics.csv, a plot per metric and rollout videos; returns the main paths."""
    atomic_write_json(out / "summary.json", summary)
    horizon = len(curves["mse"]["model"])
    table = io.StringIO(newline="")  # built in memory, then written atomically like every other output
    columns = [(method, metric) for metric in STEP_METRICS for method in METHODS if method in curves[metric]]
    writer = csv.writer(table)
    events = summary.get("events", {})
    event_columns = [key for key in (*EVENT_RATES, "reward_steps", "real_ends") if events]
    writer.writerow(
        ["step", *(f"{method}_{metric}" for method, metric in columns), *(f"model_{key}" for key in event_columns)]
    )
    for k in range(max(horizon, events.get("horizon", 0))):  # each column empty past its own horizon
        cell = lambda values: f"{values[k]:.6g}" if k < len(values) and values[k] is not None else ""  # noqa: E731
        writer.writerow(
            [
                k + 1,
                *(cell(curves[metric][method]) for method, metric in columns),
                *(cell(events[key]) for key in event_columns),
            ]
        )
    atomic_write_bytes(out / "metrics.csv", table.getvalue().encode())
    paths = {}
    if events:
        figure = horizon_plot(
            {key.replace("_", " "): events[key] for key in EVENT_RATES},
            "rate",
            f"{summary['game']}: rewards and ends over {events['rollouts']} rollouts from {events['episodes']} episodes",
        )
        paths["events"] = out / "plots" / "events_vs_horizon.png"
        save_figure(figure, paths["events"])
    for name, metric in STEP_METRICS.items():
        figure = horizon_plot(
            {METHODS[m]: v for m, v in curves[name].items()},
            metric.label,
            f"{summary['game']}: open-loop {name.upper()} over {summary['starts']} rollouts",
            log_y=metric.log_y,
        )
        paths[name] = out / "plots" / f"{name}_vs_horizon.png"
        save_figure(figure, paths[name])
    chosen = spread(len(windows.actions), videos)
    if len(chosen) == 0:
        return paths
    context = frames_to_float(torch.from_numpy(windows.context[chosen]).to(device))
    predicted = rollout(model, context, torch.from_numpy(windows.actions[chosen]).to(device), feedback).cpu().numpy()
    written = write_rollout_videos(
        windows.truth[chosen], predicted, [out / "videos" / f"rollout_{v}" for v in range(len(chosen))], ("mp4", "gif")
    )
    for v, video in enumerate(written):
        paths.update({f"video_{v}_{suffix}": path for suffix, path in video.items()})
    return paths


# ------------------------------------------------------------------------------------------ the whole evaluation


def checkpoint_feedback(state: dict[str, Any], kind: str | None = None) -> Feedback:
    """How the checkpoint's rollouts feed predictions back: its model.feedback, or `kind` (--feedback) instead."""
    saved = model_config(state)
    if kind == "palette" and not saved.palette:
        raise UserError(
            "--feedback palette: the checkpoint has no palette (it was trained before palette feedback existed); "
            "use --feedback uint8 or float"
        )
    return Feedback.of(replace(saved, feedback=kind or saved.feedback))


# The settings that decide what follows a frame and an action; noop_max and max_episode_steps only pick where episodes
# start and end.
DYNAMICS = (
    "frame_skip",
    "repeat_action_probability",
    "screen_size",
    "context_frames",
    "full_action_space",
    "terminal_on_life_loss",
)


def check_same_frames(dataset: ShardedDataset, trained_on: dict[str, Any]) -> None:
    """UserError unless `dataset` was recorded with the settings of the checkpoint's training data (`trained_on`): a
    model scored on frames of another frame skip or sticky-action rate would be scored on a game it never saw."""
    recorded, trained = dataset.manifest.env.to_dict(), EnvSettings.from_dict(trained_on["env_settings"]).to_dict()
    for key in DYNAMICS:
        if recorded[key] != trained[key]:
            raise UserError(
                f"--data_dir was recorded with {key}={recorded[key]}, the checkpoint's training data with "
                f"{key}={trained[key]}; evaluate on data recorded with the same settings, or on fresh episodes "
                "(no --data_dir)"
            )


def saved_wandb(state: dict[str, Any], mode: str, project: str | None = None, entity: str | None = None) -> WandbConfig:
    """The W&B project, entity and init timeout of the checkpoint's run (this version's defaults where it names none),
    `project` and `entity` instead when given: an evaluation logs beside the run it scores."""
    saved = state["config"].get("experiment", {})
    saved = saved.get("wandb", {}) if isinstance(saved, dict) else {}
    saved = saved if isinstance(saved, dict) else {}
    default = WandbConfig()
    text = lambda key: saved.get(key) if isinstance(saved.get(key), str) else getattr(default, key)  # noqa: E731
    timeout = saved.get("init_timeout")
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 3600):
        timeout = default.init_timeout  # a checkpoint from before the setting, or one altered
    return WandbConfig(mode, project or text("project"), entity or text("entity"), float(timeout))


def training_run(checkpoint: Path, state: dict[str, Any]) -> str | None:
    """The name of the training run a checkpoint comes from: its run folder's name (the W&B run's name and group),
    or its W&B id when the file lies outside a run folder; None when neither is known."""
    if checkpoint.parent.name == "checkpoints" and (checkpoint.parent.parent / "resolved_config.yaml").is_file():
        return checkpoint.parent.parent.name
    return state.get("wandb_id")


def evaluate_checkpoint(
    checkpoint: str | Path,
    game: str | None = None,
    episodes: int = 4,
    starts_per_episode: int = 16,
    horizon: int = 50,
    seed: int | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "runs",
    device: str | None = None,
    batch_size: int = 64,
    videos: int = 4,
    wandb_mode: str = "disabled",
    feedback: str | None = None,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    event_episodes: int | None = None,
    event_horizon: int = 10,
    samples: int = 4,
    sampling_steps: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint (a .pt file, or a run folder: its best.pt, else its last.pt) open loop and write
    <out_dir>/<YYYYmmdd-HHMMSS>_<game>_eval/, with what it prints in its eval.log. `game` is a check (the checkpoint
    knows its game); `seed` defaults to the training data's seed + 1; `data_dir` takes the windows from a recorded dataset
    instead of fresh episodes; `feedback` (palette, uint8 or float) overrides the checkpoint's model.feedback; W&B logs
    to the checkpoint's project and entity unless `wandb_project`, `wandb_entity` are given. A model with an event head is
    also scored on the rewards and ends of `event_episodes` episodes (default: those of the frames; more are played, or
    read from `data_dir`; 0: not scored), `event_horizon` steps ahead (`event_curves`), and on its imagined returns
    along the frames' rollouts. A stochastic
    model (edm) draws `samples` rollouts per start (`evaluate`), each frame in `sampling_steps` denoising steps (default:
    the checkpoint's model.diffusion.steps).
    Returns the summary (as in summary.json) with "out_dir" and "paths" added. Bad input raises UserError."""
    with teed_stdout() as console:
        result = evaluate_teed(
            console,
            find_checkpoint_file(checkpoint),
            game,
            episodes,
            starts_per_episode,
            horizon,
            seed,
            data_dir,
            out_dir,
            device,
            batch_size,
            videos,
            wandb_mode,
            feedback,
            wandb_project,
            wandb_entity,
            event_episodes,
            event_horizon,
            samples,
            sampling_steps,
        )
        print(report(result), flush=True)
    return result


def evaluate_teed(
    console: Tee,
    checkpoint: Path,
    game: str | None,
    episodes: int,
    starts_per_episode: int,
    horizon: int,
    seed: int | None,
    data_dir: str | Path | None,
    out_dir: str | Path,
    device: str | None,
    batch_size: int,
    videos: int,
    wandb_mode: str,
    feedback_kind: str | None,
    wandb_project: str | None,
    wandb_entity: str | None,
    event_episodes: int | None = None,
    event_horizon: int = 10,
    samples: int = 4,
    sampling_steps: int | None = None,
) -> dict[str, Any]:
    """evaluate_checkpoint's work, its printed lines going to `console` too (opened on eval.log once the folder exists)."""
    for name, value, low, high in (
        ("episodes", episodes, 1, 10_000),
        ("starts_per_episode", starts_per_episode, 1, 100_000),
        ("horizon", horizon, 1, 100_000),
        ("batch_size", batch_size, 1, 65_536),
        ("videos", videos, 0, 1_000),
        ("seed", seed, 0, 2**31 - 1),
        ("event_episodes", event_episodes, 0, 10_000),
        ("event_horizon", event_horizon, 1, 1_000),
        ("samples", samples, 1, 1_000),
        ("sampling_steps", sampling_steps, 1, 1_000),
    ):
        if value is not None and value < low:
            raise UserError(f"--{name} must be >= {low}, got {value}")
        if value is not None and value > high:
            raise UserError(f"--{name} must be <= {high:,}, got {value:,}")
    if wandb_mode not in WANDB_MODES:
        raise UserError(f"--wandb_mode must be one of {', '.join(WANDB_MODES)}, got {wandb_mode!r}")
    check_writable(out_dir, "--out_dir")
    check_apart(out_dir, "--out_dir", {"--data_dir": data_dir}, both_ways=False)
    check_outside_datasets(out_dir, "--out_dir")

    state = read_checkpoint(checkpoint)
    trained_on = state["dataset"]
    game_name = trained_on["game"]
    if game is not None and resolve_game(game) != game_name:
        raise UserError(f"--game {game} differs from the checkpoint's game {game_name}; evaluate it on {game_name}")
    wandb_cfg = saved_wandb(state, wandb_mode, wandb_project, wandb_entity)
    check_wandb(wandb_cfg, "--wandb_mode")
    torch_device = choose_device(device)
    model = model_from_checkpoint(state).to(torch_device)
    if sampling_steps is not None:
        if not is_stochastic(model):
            raise UserError(
                f"--sampling_steps is for a diffusion model (model.name=edm); this checkpoint's model is "
                f"{model_config(state).name}, which predicts in one call: leave it out"
            )
        model.diffusion.steps = sampling_steps
    stochastic = {"samples": samples, "sampling_steps": model.diffusion.steps} if is_stochastic(model) else {}
    feedback = checkpoint_feedback(state, feedback_kind)
    seed = seed if seed is not None else trained_on.get("seed", 0) + 1

    start = time.perf_counter()
    scored_events = (event_episodes if event_episodes is not None else episodes) if has_events(model) else 0
    if data_dir:
        dataset = ShardedDataset(data_dir)
        if dataset.game != game_name:
            raise UserError(f"--data_dir holds {dataset.game} data, the checkpoint is for {game_name}")
        check_same_frames(dataset, trained_on)
        windows = windows_from_dataset(dataset, horizon, episodes * starts_per_episode)
        source = str(dataset.root)
        played = episodes_from_dataset(dataset, scored_events) if scored_events else []
    else:
        count = max(episodes, scored_events)
        print(f"playing {count} fresh episode{'s' * (count > 1)} of {game_name} (seed {seed})", flush=True)
        with tqdm(unit="step", desc="playing", file=sys.stderr, dynamic_ncols=True, leave=False, disable=None) as bar:
            played = play_episodes(EnvSettings.from_dict(trained_on["env_settings"]), count, seed, bar.update)
        windows = windows_from_episodes(played[:episodes], horizon, starts_per_episode)
        played = played[:scored_events]
        source = f"{episodes} fresh episodes, seed {seed}"
    cases = event_cases(played, event_horizon) if scored_events else None
    if scored_events and cases is None:  # before the work, not after it
        if data_dir and not played:
            raise UserError(
                f"--data_dir '{data_dir}' holds no complete episode (none ends in it) to score the rewards and ends "
                "on; pass --event_episodes 0 to score the frames only, or evaluate on fresh episodes (leave out --data_dir)"
            )
        raise UserError(
            f"the {len(played)} episode{'s' * (len(played) > 1)} {'read from --data_dir' if data_dir else 'played'} hold "
            "no reward and no end to score the event head on; pass more --event_episodes, or --event_episodes 0 "
            "to score the frames only"
        )
    print(
        f"evaluating {checkpoint} (step {state['step']}) on {len(windows.actions)} rollouts of {horizon} steps "
        f"from {source}"
        + (
            f", and its rewards and ends on {len(cases[0].actions)} rollouts of {event_horizon} steps "
            f"from {len(played)} episode{'s' * (len(played) > 1)}"
            if cases
            else ""
        ),
        flush=True,
    )
    out = create_timestamped_dir(
        out_dir, f"{game_name}_eval", ("plots", "videos"), "--out_dir"
    )  # before the work: fail fast
    console.open(out / "eval.log")
    errors = evaluate(model, windows, batch_size, torch_device, seed, feedback, progress=True, samples=samples)
    curves = summarise(errors)
    ratio, gap = headline(curves, horizon)
    if "model_mean" in errors:
        stochastic["mean_mse_ratio_to_copy"] = headline(curves, horizon, "model_mean")[0]
    events = {}
    if cases is not None:
        events["events"] = event_curves(model, cases, len(played), batch_size, torch_device, feedback, progress=True)
        events["events_at"] = {
            str(h): {key: events["events"][key][h - 1] for key in EVENT_RATES}
            for h in EVENT_HEADLINE_STEPS
            if h <= event_horizon
        }
        events["return_fidelity"] = return_fidelity(errors["imagined"]["rewards"], windows.rewards)
    elif has_events(model):
        print("--event_episodes 0: no reward or end scores", flush=True)
    else:
        print("the checkpoint predicts frames only (it has no event head): no reward or end scores", flush=True)
    summary = {
        "game": game_name,
        "checkpoint": str(checkpoint),
        "checkpoint_step": state["step"],
        "source": source,
        "horizon": horizon,
        "episodes": episodes if not data_dir else None,
        "starts": len(windows.actions),
        "seed": seed,
        "feedback": feedback.kind,
        "palette": list(feedback.palette or ()) or None,
        **curves,
        "mse_ratio_to_copy": ratio,
        "action_gap": gap,
        **stochastic,
        **events,
        "seconds": round(time.perf_counter() - start, 2),
    }
    paths = write_outputs(out, summary, curves, model, windows, videos, torch_device, feedback)

    settings = {
        "checkpoint": str(checkpoint),
        "game": game_name,
        "episodes": episodes,
        "starts_per_episode": starts_per_episode,
        "horizon": horizon,
        "seed": seed,
        "data_dir": data_dir and str(data_dir),
        "out_dir": str(out_dir),
        "device": device,
        "batch_size": batch_size,
        "videos": videos,
        "wandb_mode": wandb_mode,
        "feedback": feedback.kind,
        "event_episodes": scored_events,
        "event_horizon": event_horizon,
        **stochastic,
    }
    trained = {"run": training_run(checkpoint, state), "wandb_id": state.get("wandb_id"), "step": state["step"]}
    logger = make_logger(
        wandb_cfg,
        out,
        out.name,
        {"eval": settings, "trained": trained, "checkpoint_config": state["config"]},
        group=trained["run"],
        job_type="eval",
        setting="--wandb_mode",
    )
    scores = {f"eval/mse_ratio_to_copy_h{k}": v for k, v in ratio.items()} | {
        f"eval/action_gap_h{k}": v for k, v in gap.items()
    }
    scores |= {f"eval/mean_mse_ratio_to_copy_h{k}": v for k, v in summary.get("mean_mse_ratio_to_copy", {}).items()}
    scores |= {
        f"eval/{key}_h{h}": v
        for h, rates in summary.get("events_at", {}).items()
        for key, v in rates.items()
        if v is not None
    }
    scores |= {f"eval/return_{key}": v for key, v in summary.get("return_fidelity", {}).items() if isinstance(v, float)}
    logger.log(scores, step=0)
    for key, path in paths.items():
        if key in STEP_METRICS or key == "events":
            logger.log_image(f"eval/{key}_vs_horizon", iio.imread(path)[..., :3], step=0)
        elif key.endswith("mp4"):
            logger.log_video(f"eval/{key.removesuffix('_mp4')}", path, step=0)
    logger.close()
    return {**summary, "out_dir": out, "paths": paths}


def report(result: dict[str, Any]) -> str:
    """The headline numbers and where the files are, as the command ends."""
    ratios = ", ".join(f"h={k}: {v:.3f}" for k, v in result["mse_ratio_to_copy"].items())
    gaps = ", ".join(f"h={k}: {v:.3f}" for k, v in result["action_gap"].items())
    sharp = ", ".join(f"h={k}: {result['sharpness']['model'][int(k) - 1]:.3f}" for k in result["mse_ratio_to_copy"])
    lines = [
        f"model MSE / copy-last MSE  {ratios}",
        f"action gap (shuffled / true)  {gaps}",
        f"sharpness (1 right, < 1 blur, > 1 noise)  {sharp}",
    ]
    if "samples" in result:
        lines[0] += f"  (one sample of {result['sampling_steps']} denoising steps, the mean over {result['samples']})"
    if "mean_mse_ratio_to_copy" in result:
        means = ", ".join(f"h={k}: {v:.3f}" for k, v in result["mean_mse_ratio_to_copy"].items())
        mean_sharp = ", ".join(
            f"h={k}: {result['sharpness']['model_mean'][int(k) - 1]:.3f}" for k in result["mean_mse_ratio_to_copy"]
        )
        lines += [f"mean of the {result['samples']} samples: MSE / copy-last MSE  {means}; sharpness  {mean_sharp}"]
    for h, rates in result.get("events_at", {}).items():
        rate = lambda key, digits=2: "-" if rates[key] is None else f"{rates[key]:.{digits}f}"  # noqa: E731
        lines.append(
            f"h={h}: reward sign right {rate('reward_sign_accuracy', 3)}, false rewards {rate('false_reward_rate', 4)}, "
            f"ends: precision {rate('end_precision')}, recall {rate('end_recall')}"
        )
    if "return_fidelity" in result:
        r = result["return_fidelity"]
        lines.append(
            f"return over {r['steps']} steps: real {r['real_mean']:.2f} +- {r['real_std']:.2f}, imagined "
            f"{r['imagined_mean']:.2f} +- {r['imagined_std']:.2f}, imagined - real {r['difference_mean']:+.2f} +- "
            f"{r['difference_std']:.2f} ({r['rollouts']} rollouts)"
        )
    lines += [
        f"plot   {result['paths']['mse']}",
        f"video  {result['paths'].get('video_0_mp4', '-')}",
        f"all    {result['out_dir']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.eval", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder written by src.train (its checkpoints/best.pt, else last.pt) or a .pt file",
    )
    p.add_argument(
        "--game",
        default=None,
        help="a check: the game the checkpoint was trained on, e.g. Pong (default: the checkpoint's)",
    )
    p.add_argument("--episodes", type=int, default=4, help="fresh episodes to play (default 4)")
    p.add_argument(
        "--starts_per_episode",
        type=int,
        default=16,
        help="rollout start points per episode, spread evenly (default 16)",
    )
    p.add_argument("--horizon", type=int, default=50, help="steps predicted open loop from each start (default 50)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the played episodes (default: the training data's seed + 1)"
    )
    p.add_argument(
        "--data_dir", default=None, help="evaluate on windows of a recorded dataset instead of fresh episodes"
    )
    p.add_argument("--out_dir", default="runs", help="where <timestamp>_<game>_eval/ goes (default runs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch_size", type=int, default=64, help="rollouts computed together (default 64)")
    p.add_argument("--videos", type=int, default=4, help="rollouts written as MP4 and GIF (default 4)")
    p.add_argument(
        "--wandb_mode",
        choices=WANDB_MODES,
        default="auto",
        help="auto (default): online when W&B finds a login, else not logged (WANDB_MODE, if set, decides); "
        "online, offline (under the eval folder) or disabled",
    )
    p.add_argument("--wandb_project", default=None, help="W&B project (default: the training run's)")
    p.add_argument("--wandb_entity", default=None, help="W&B entity (default: the training run's)")
    p.add_argument(
        "--event_episodes",
        type=int,
        default=None,
        help="episodes whose every reward and end is scored, for a "
        "model with an event head (default: --episodes, the same "
        "episodes; more are played; 0: none)",
    )
    p.add_argument(
        "--event_horizon", type=int, default=10, help="steps ahead the rewards and ends are scored at (default 10)"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=4,
        help="a diffusion model's rollouts per start: scored one at a time and as their mean frame (default 4)",
    )
    p.add_argument(
        "--sampling_steps",
        type=int,
        default=None,
        help="a diffusion model's denoising steps per frame (default: the checkpoint's model.diffusion.steps)",
    )
    p.add_argument(
        "--feedback",
        choices=FEEDBACK,
        default=None,
        help="how predictions re-enter the context: palette (the checkpoint's grey levels), uint8 (any grey level) "
        "or float (default: the checkpoint's)",
    )
    evaluate_checkpoint(**vars(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    run_cli(main)
