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
ready (subject.py) and what it writes and logs (outputs.py).
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
from src.envs.game import play_episodes
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
from src.evaluation.outputs import log_to_wandb, report, write_outputs
from src.evaluation.subject import Subject, load_subject
from src.models.diffusion import is_stochastic, seed_sampling
from src.models.events import EventCounts, has_events
from src.models.rollout import Feedback, imagine, rollout
from src.models.run import TrainedOn
from src.utils.console import Tee, teed_stdout
from src.utils.errors import UserError, run_cli
from src.utils.frames import frames_to_float
from src.utils.io import check_apart, check_outside_datasets, check_writable, create_timestamped_dir, json_safe
from src.utils.metrics import ALIVE, STEP_METRICS

HEADLINE_STEPS = (1, 10, 50, 100)  # steps ahead reported in summary.json's ratios and its "alive" block
ACTION_GAP_STEPS = (1, 10)
EVENT_HEADLINE_STEPS = (1, 10)


# ------------------------------------------------------------------------------------------ metrics


def per_step_errors(prediction: torch.Tensor, truth: torch.Tensor, before: torch.Tensor) -> dict[str, torch.Tensor]:
    """prediction, truth: (B, K, H, W); before: (B, H, W), the last context frame (the previous frame of step 1, for
    both) -> {metric: (B, K), or (B, K, 2) for a ratio's parts} for every metric of STEP_METRICS."""
    b, k, h, w = truth.shape
    previous = lambda frames: torch.cat([before.unsqueeze(1), frames[:, :-1]], dim=1)  # noqa: E731
    frames = [x.reshape(b * k, h, w) for x in (prediction, truth, previous(prediction), previous(truth))]  # (B*K, H, W)
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
) -> dict[str, dict[str, np.ndarray]]:
    """Per-case, per-step errors of the model, the copy-last-frame baseline and the model with shuffled actions.

    A stochastic model (edm) rolls out `samples` times from every start, its sampling seeded with `seed`: "model" is
    then the mean of the metric over the samples (what one sample scores), and with samples > 1 "model_mean" scores
    the mean frame of the samples (what the MSE rewards); the shuffled actions roll out once.
    Returns {method: {metric: (N, K), or (N, K, 2) for a ratio's parts}} for every metric of STEP_METRICS, and for a
    model with an event head {"imagined": {"rewards": (N, K)}}, the reward signs it predicted along the (first
    sample's) rollouts; the pure computation, no I/O but a progress bar on stderr with `progress` (a long evaluation
    on a CPU takes minutes)."""
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
        last = context[:, -1]  # (B, H, W)
        drawn = []
        for i in range(samples):
            imagined = imagine(model, context, actions, feedback)
            if i == 0 and imagined.rewards is not None:
                imagined_rewards.append(imagined.rewards.cpu().numpy())
            drawn.append(imagined.frames)
            bar.update(len(truth))
        scored = {
            "model": [per_step_errors(frames, truth, last) for frames in drawn],
            "copy_last": [per_step_errors(last.unsqueeze(1).expand_as(truth), truth, last)],
            "model_shuffled_actions": [
                per_step_errors(
                    rollout(model, context, torch.from_numpy(shuffled[sl]).to(device), feedback), truth, last
                )
            ],
        }
        if samples > 1:
            scored["model_mean"] = [per_step_errors(torch.stack(drawn).mean(0), truth, last)]
        for method, errors in scored.items():
            for metric in STEP_METRICS:
                results[method][metric].append(torch.stack([e[metric] for e in errors]).mean(0).cpu().numpy())
    bar.close()
    out = {m: {k: np.concatenate(v) for k, v in metrics.items()} for m, metrics in results.items()}
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


def alive(
    curves: dict[str, dict[str, list]], horizon: int, method: str = "model"
) -> dict[str, dict[str, float | None]]:
    """Is the imagined game still moving: the changed-pixel recall and precision, motion and objects ratios (ALIVE) of
    `method` at steps 1, 10, 50, 100 within the horizon; None where there was nothing to count."""
    return {name: {str(k): curves[name][method][k - 1] for k in HEADLINE_STEPS if k <= horizon} for name in ALIVE}


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
            played = play_episodes(trained_on.settings, count, subject.seed, bar.update)
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
    ratios of its samples' mean) and, with an event head, the event rates and the return fidelity."""
    model, windows, device, feedback = subject.model, cases.windows, subject.device, subject.feedback
    errors = evaluate(
        model, windows, cfg.batch_size, device, subject.seed, feedback, progress=True, samples=cfg.samples
    )
    curves = summarise(errors)
    ratio, gap = headline(curves, cfg.horizon)
    scores = {**curves, "mse_ratio_to_copy": ratio, "action_gap": gap, "alive": alive(curves, cfg.horizon)}
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
