"""Evaluate a checkpoint: open-loop rollouts against the real game, per step ahead, with baselines.

    python -m src.eval --checkpoint runs/<run> [--horizon 50] [--episodes 4]     # its checkpoints/best.pt
    evaluate_checkpoint(EvalConfig("runs/<run>", horizon=50, episodes=4))         # the same from Python

The model is rebuilt from the checkpoint alone. By default it plays fresh episodes in the real game with the
checkpoint's preprocessing (random policy, a seed other than the training data's); from many start points it
predicts `horizon` frames open loop, feeding its own predictions back with the true actions. Writes
<out_dir>/<YYYYmmdd-HHMMSS>_<game>_eval/: summary.json, metrics.csv, plots/*.png, videos/*.mp4 and *.gif, and eval.log
(what it printed). With W&B, the evaluation is a run of job type "eval" in the training run's project and group.

Here: the rollouts, their scores per step ahead, and the evaluation from start to end. In src/evaluation/: its
settings (config.py: EvalConfig), its test cases and the methods compared on them (cases.py), the checkpoint made
ready (subject.py), the ball in the rollouts (ball.py), the rewards and ends (events.py) and what it writes and logs
(outputs.py).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from src.dataset.shards import ShardedDataset
from src.envs.ball import tracks_ball
from src.envs.game import play_episodes
from src.evaluation.ball import BALL_METHODS, ball_at, ball_block, ball_parts
from src.evaluation.cases import (
    EVENT_RATES,
    METHODS,
    Windows,
    check_same_frames,
    episodes_from_dataset,
    event_cases,
    windows_from_dataset,
    windows_from_episodes,
)
from src.evaluation.config import EvalConfig, parse_args
from src.evaluation.events import event_curves, return_fidelity
from src.evaluation.outputs import log_to_wandb, report, write_outputs
from src.evaluation.subject import Subject, load_subject
from src.models.diffusion import is_stochastic, seed_sampling
from src.models.events import has_events
from src.models.rollout import Feedback, imagine, rollout
from src.models.run import TrainedOn
from src.utils.console import Tee, teed_stdout
from src.utils.errors import UserError, run_cli
from src.utils.frames import frames_to_float
from src.utils.io import check_apart, check_outside_datasets, check_writable, create_timestamped_dir, json_safe
from src.utils.metrics import ALIVE, STEP_METRICS, step_frames

HEADLINE_STEPS = (1, 10, 50, 100)  # steps ahead reported in summary.json's ratios and its "alive" block
ACTION_GAP_STEPS = (1, 10)
EVENT_HEADLINE_STEPS = (1, 10)


# ------------------------------------------------------------------------------------------ metrics


def per_step_errors(prediction: torch.Tensor, truth: torch.Tensor, before: torch.Tensor) -> dict[str, torch.Tensor]:
    """prediction, truth: (B, K, H, W); before: (B, H, W), the last context frame (the previous frame of step 1, for
    both) -> {metric: (B, K), or (B, K, 2) for a ratio's parts} for every metric of STEP_METRICS."""
    b, k = truth.shape[:2]
    frames = step_frames(prediction, truth, before)  # (B*K, H, W) each
    scores = {name: metric.per_frame(*frames) for name, metric in STEP_METRICS.items()}  # (B*K,) or (B*K, 2)
    return {name: v.view(b, k, *v.shape[1:]) for name, v in scores.items()}


def evaluate(
    model: nn.Module,
    windows: Windows,
    batch_size: int,
    device: torch.device,
    seed: int,
    feedback: Feedback = Feedback("uint8"),
    progress: bool = False,
    samples: int = 1,
    game: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-case, per-step errors of the model, the copy-last-frame baseline and the model with shuffled actions.

    A stochastic model (edm) rolls out `samples` times from every start, its sampling seeded with `seed`: "model" is
    then the mean of the metric over the samples (what one sample scores), and with samples > 1 "model_mean" scores
    the mean frame of the samples (what the MSE rewards); the shuffled actions roll out once.
    Returns {method: {metric: (N, K), or (N, K, 2) for a ratio's parts}} for every metric of STEP_METRICS, and for a
    model with an event head {"imagined": {"rewards": (N, K)}}, the reward signs it predicted along the (first
    sample's) rollouts; with windows.ball and its `game`, {"ball": {method: ball_parts}} for the BALL_METHODS (a
    stochastic model's "model": the mean over its samples). The pure computation, no I/O but a progress bar on stderr
    with `progress` (a long evaluation on a CPU takes minutes)."""
    n = len(windows.actions)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = windows.actions.copy()
    shuffled[order] = windows.actions[np.roll(order, -1)]  # each case gets another case's actions, never its own
    samples = samples if is_stochastic(model) else 1
    methods = [m for m in METHODS if m != "model_mean" or samples > 1]
    results: dict[str, dict[str, list]] = {m: {name: [] for name in STEP_METRICS} for m in methods}
    ball = {m: {"present": [], "distance": []} for m in BALL_METHODS} if windows.ball is not None and game else None
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
        last = context[:, -1]  # (B, H, W)
        drawn = []
        for i in range(samples):
            imagined = imagine(model, context, actions, feedback)
            if i == 0 and imagined.expected_rewards is not None:
                imagined_rewards.append(imagined.expected_rewards.cpu().numpy())
            drawn.append(imagined.frames)
            bar.update(len(truth))
        predicted = {
            "model": drawn,
            "copy_last": [last.unsqueeze(1).expand_as(truth)],
            "model_shuffled_actions": [
                rollout(model, context, torch.from_numpy(shuffled[sl]).to(device), feedback)
            ],  # (B, K, H, W) each
        }
        if samples > 1:
            predicted["model_mean"] = [torch.stack(drawn).mean(0)]
        for method, frames in predicted.items():
            errors = [per_step_errors(f, truth, last) for f in frames]
            for metric in STEP_METRICS:
                results[method][metric].append(torch.stack([e[metric] for e in errors]).mean(0).cpu().numpy())
        for method, parts in (ball or {}).items():
            for name, part in ball_parts(predicted[method], windows.ball[sl], game).items():
                parts[name].append(part)
    bar.close()
    out = {m: {k: np.concatenate(v) for k, v in metrics.items()} for m, metrics in results.items()}
    if ball is not None:
        out["ball"] = {m: {k: np.concatenate(v) for k, v in parts.items()} for m, parts in ball.items()}
    return out | ({"imagined": {"rewards": np.concatenate(imagined_rewards)}} if imagined_rewards else {})


def summarise(errors: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Per step over the cases, as each metric of STEP_METRICS aggregates them: {metric: {method: [K]}}, for the
    methods that `errors` holds; None where a ratio had nothing to count (0 / 0), as summary.json writes it."""
    return {
        name: {
            method: json_safe(metric.over_cases(errors[method][name]).tolist())
            for method in METHODS
            if method in errors
        }
        for name, metric in STEP_METRICS.items()
    }


def headline(
    curves: dict[str, dict[str, list[float]]], horizon: int, method: str = "model"
) -> tuple[dict[str, float], dict[str, float]]:
    """(model MSE / copy-last MSE at steps 1, 10, 50, 100; shuffled-action MSE / true-action MSE at steps 1, 10), within
    the horizon; `method` model_mean: the ratios of the mean of a stochastic model's samples."""
    mse = {m: [math.nan if v is None else v for v in values] for m, values in curves["mse"].items()}  # None: NaN
    ratio = {str(k): mse[method][k - 1] / max(mse["copy_last"][k - 1], 1e-12) for k in HEADLINE_STEPS if k <= horizon}
    gap = {
        str(k): mse["model_shuffled_actions"][k - 1] / max(mse["model"][k - 1], 1e-12)
        for k in ACTION_GAP_STEPS
        if k <= horizon
    }
    return ratio, gap


def alive(
    curves: dict[str, dict[str, list]], horizon: int, method: str = "model", ball: dict | None = None
) -> dict[str, dict[str, float | None]]:
    """Is the imagined game still moving: the changed-pixel recall and precision, motion and objects ratios (ALIVE) of
    `method` at steps 1, 10, 50, 100 within the horizon, and given summary.json's `ball` block the model's
    ball_present and ball_distance there; None where there was nothing to count."""
    steps = [k for k in HEADLINE_STEPS if k <= horizon]
    return {name: {str(k): curves[name][method][k - 1] for k in steps} for name in ALIVE} | (
        ball_at(ball, steps) if ball else {}
    )


# ------------------------------------------------------------------------------------------ the whole evaluation


@dataclass
class Cases:
    """What the checkpoint is scored on: the frames' windows, and the event cases of the episodes they come from."""

    windows: Windows
    source: str  # where the windows come from, as summary.json says
    episodes: int  # episodes the rewards and ends are scored on
    events: tuple[Windows, np.ndarray, np.ndarray] | None  # event_cases of those episodes; None: not scored


def gather_cases(cfg: EvalConfig, subject: Subject) -> Cases:
    """Windows from fresh episodes of the game (played here) or from `cfg.data_dir`, and the event cases of
    `subject.event_episodes` of those episodes; UserError before the work when there is nothing to score."""
    trained_on, scored = TrainedOn.of(subject.state), subject.event_episodes
    if cfg.data_dir:
        dataset = ShardedDataset(cfg.data_dir)
        if dataset.game != subject.game:
            raise UserError(f"--data_dir holds {dataset.game} data, the checkpoint is for {subject.game}")
        check_same_frames(dataset, trained_on)
        windows = windows_from_dataset(dataset, cfg.horizon, cfg.episodes * cfg.starts_per_episode)
        source = str(dataset.root)
        played = episodes_from_dataset(dataset, scored) if scored else []
    else:
        count = max(cfg.episodes, scored)
        print(f"playing {count} fresh episode{'s' * (count > 1)} of {subject.game} (seed {subject.seed})", flush=True)
        with tqdm(unit="step", desc="playing", file=sys.stderr, dynamic_ncols=True, leave=False, disable=None) as bar:
            played = play_episodes(
                trained_on.settings, count, subject.seed, bar.update, tracks_ball(trained_on.settings)
            )
        windows = windows_from_episodes(played[: cfg.episodes], cfg.horizon, cfg.starts_per_episode)
        played = played[:scored]
        source = f"{cfg.episodes} fresh episodes, seed {subject.seed}"
    cases = event_cases(played, cfg.event_horizon) if scored else None
    if scored and cases is None:
        if cfg.data_dir and not played:
            raise UserError(
                f"--data_dir '{cfg.data_dir}' holds no complete episode (none ends in it) to score the rewards and "
                "ends on; pass --event_episodes 0 to score the frames only, or evaluate on fresh episodes (leave out "
                "--data_dir)"
            )
        raise UserError(
            f"the {len(played)} episode{'s' * (len(played) > 1)} {'read from --data_dir' if cfg.data_dir else 'played'}"
            " hold no reward and no end to score the event head on; pass more --event_episodes, or --event_episodes 0 "
            "to score the frames only"
        )
    return Cases(windows, source, len(played), cases)


def score(cfg: EvalConfig, subject: Subject, cases: Cases) -> dict[str, Any]:
    """summary.json's scores: the per-step curves, their headline ratios (and a diffusion model's sampling with the
    ratios of its samples' mean), the ball where the windows have it and, with an event head, the event rates and the
    return fidelity."""
    model, windows, device, feedback = subject.model, cases.windows, subject.device, subject.feedback
    errors = evaluate(
        model,
        windows,
        cfg.batch_size,
        device,
        subject.seed,
        feedback,
        progress=True,
        samples=cfg.samples,
        game=subject.game,
    )
    curves = summarise(errors)
    ratio, gap = headline(curves, cfg.horizon)
    ball = ball_block(errors["ball"]) if "ball" in errors else None  # a game with a known ball, in played episodes
    scores = {**curves, "mse_ratio_to_copy": ratio, "action_gap": gap, "alive": alive(curves, cfg.horizon, ball=ball)}
    scores |= {"ball": ball} if ball else {}
    scores |= subject.sampling
    if "model_mean" in errors:
        scores["mean_mse_ratio_to_copy"] = headline(curves, cfg.horizon, "model_mean")[0]
    if cases.events is not None:
        events = event_curves(model, cases.events, cases.episodes, cfg.batch_size, device, feedback, progress=True)
        scores["events"] = events
        scores["events_at"] = {
            str(h): {key: events[key][h - 1] for key in EVENT_RATES}
            for h in EVENT_HEADLINE_STEPS
            if h <= cfg.event_horizon
        }
        scores["return_fidelity"] = return_fidelity(errors["imagined"]["rewards"], windows.rewards)
    elif has_events(model):
        print("--event_episodes 0: no reward or end scores", flush=True)
    else:
        print("the checkpoint predicts frames only (it has no event head): no reward or end scores", flush=True)
    return scores


def evaluate_checkpoint(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint` open loop as `cfg` says and write <out_dir>/<YYYYmmdd-HHMMSS>_<game>_eval/, with what
    it prints in its eval.log. Returns the summary (as in summary.json) with "out_dir" and "paths" added. Bad input
    raises UserError (a bad setting already when the EvalConfig is made)."""
    with teed_stdout() as console:
        result = evaluate_teed(console, cfg)
        print(report(result), flush=True)
    return result


def evaluate_teed(console: Tee, cfg: EvalConfig) -> dict[str, Any]:
    """evaluate_checkpoint's work, its printed lines going to `console` too (opened on eval.log once the folder
    exists)."""
    check_writable(cfg.out_dir, "--out_dir")
    check_apart(cfg.out_dir, "--out_dir", {"--data_dir": cfg.data_dir}, both_ways=False)
    check_outside_datasets(cfg.out_dir, "--out_dir")
    subject = load_subject(cfg)
    state = subject.state
    start = time.perf_counter()
    cases = gather_cases(cfg, subject)
    windows, plural = cases.windows, "s" * (cases.episodes > 1)
    print(
        f"evaluating {subject.checkpoint} (step {state['step']}) on {len(windows.actions)} rollouts of {cfg.horizon} "
        f"steps from {cases.source}"
        + (
            f", and its rewards and ends on {len(cases.events[0].actions)} rollouts of {cfg.event_horizon} steps "
            f"from {cases.episodes} episode{plural}"
            if cases.events
            else ""
        ),
        flush=True,
    )
    out = create_timestamped_dir(cfg.out_dir, f"{subject.game}_eval", ("plots", "videos"), "--out_dir")  # fail fast
    console.open(out / "eval.log")
    summary = {
        "game": subject.game,
        "checkpoint": str(subject.checkpoint),
        "checkpoint_step": state["step"],
        "source": cases.source,
        "horizon": cfg.horizon,
        "episodes": cfg.episodes if not cfg.data_dir else None,
        "starts": len(windows.actions),
        "seed": subject.seed,
        "feedback": subject.feedback.kind,
        "palette": list(subject.feedback.palette or ()) or None,
        **score(cfg, subject, cases),
    }
    summary["seconds"] = round(time.perf_counter() - start, 2)
    curves = {name: summary[name] for name in STEP_METRICS}
    paths = write_outputs(out, summary, curves, subject.model, windows, cfg.videos, subject.device, subject.feedback)
    log_to_wandb(cfg, subject, out, summary, paths)
    return {**summary, "out_dir": out, "paths": paths}


def main(argv: list[str] | None = None) -> int:
    evaluate_checkpoint(parse_args(argv, "python -m src.eval", __doc__.split("\n\n")[0]))
    return 0


if __name__ == "__main__":
    run_cli(main)
