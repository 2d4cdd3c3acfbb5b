"""What an evaluation writes and logs, once it is scored: summary.json, metrics.csv, a plot per metric, rollout
videos, the W&B run, and the report printed as the command ends.

    paths = write_outputs(out, summary, curves, model, windows, videos=4, device=device, feedback=feedback)
    log_to_wandb(cfg, subject, out, summary, paths)
    print(report({**summary, "out_dir": out, "paths": paths}))
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import torch
from torch import nn

from src.evaluation.cases import EVENT_RATES, METHODS, Windows, spread
from src.evaluation.config import EvalConfig
from src.evaluation.subject import Subject
from src.models.rollout import Feedback, rollout
from src.models.run import run_dir_of
from src.utils.frames import frames_to_float
from src.utils.io import atomic_write_bytes, atomic_write_json
from src.utils.logging import make_logger
from src.utils.metrics import STEP_METRICS
from src.utils.plots import horizon_plot, save_figure
from src.utils.video import write_rollout_videos

BALL_PLOTS = {  # summary.json's "ball" curves plotted: name: the y axis
    "present": "share of the steps with the real ball in the searched area where the prediction shows a ball (1 right)",
    "distance": "pixels from the predicted ball to the real one (0 right)",
}


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
    write_metrics_csv(out / "metrics.csv", curves, summary.get("events", {}), summary.get("ball", {}))
    paths = write_plots(out / "plots", summary, curves)
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


def write_metrics_csv(path: Path, curves: dict, events: dict, ball: dict | None = None) -> None:
    """A row per step ahead: a column per method and metric, the ball's (<method>_ball_present, _ball_distance and
    ball_counted) if tracked, and the event rates and counts (model_*) if scored."""
    horizon = len(curves["mse"]["model"])
    table = io.StringIO(newline="")  # built in memory, then written atomically like every other output
    columns = [(method, metric) for metric in STEP_METRICS for method in METHODS if method in curves[metric]]
    ball_columns = {}  # name: values
    if ball:
        for name in ("present", "distance"):
            ball_columns |= {f"{method}_ball_{name}": values for method, values in ball[name].items()}
        ball_columns["ball_counted"] = ball["counted"]
    writer = csv.writer(table)
    event_columns = [key for key in (*EVENT_RATES, "reward_steps", "real_ends") if events]
    writer.writerow(
        [
            "step",
            *(f"{method}_{metric}" for method, metric in columns),
            *ball_columns,
            *(f"model_{key}" for key in event_columns),
        ]
    )
    for k in range(max(horizon, events.get("horizon", 0))):  # each column empty past its own horizon
        cell = lambda values: f"{values[k]:.6g}" if k < len(values) and values[k] is not None else ""  # noqa: E731
        writer.writerow(
            [
                k + 1,
                *(cell(curves[metric][method]) for method, metric in columns),
                *(cell(values) for values in ball_columns.values()),
                *(cell(events[key]) for key in event_columns),
            ]
        )
    atomic_write_bytes(path, table.getvalue().encode())


def write_plots(plots: Path, summary: dict, curves: dict) -> dict[str, Path]:
    """<metric>_vs_horizon.png for every metric of STEP_METRICS, events_vs_horizon.png if the events were scored and
    ball_present_vs_horizon.png and ball_distance_vs_horizon.png if the ball was; returns their paths by metric (and
    "events", "ball_present", "ball_distance")."""
    paths = {}
    ball = summary.get("ball")
    for name, label in BALL_PLOTS.items() if ball else ():
        figure = horizon_plot(
            {METHODS[m]: [math.nan if v is None else v for v in values] for m, values in ball[name].items()},
            label,
            f"{summary['game']}: the ball in {summary['starts']} open-loop rollouts",
        )
        paths[f"ball_{name}"] = plots / f"ball_{name}_vs_horizon.png"
        save_figure(figure, paths[f"ball_{name}"])
    events = summary.get("events", {})
    if events:
        figure = horizon_plot(
            {key.replace("_", " "): events[key] for key in EVENT_RATES},
            "rate",
            f"{summary['game']}: rewards and ends over {events['rollouts']} rollouts from {events['episodes']} "
            "episodes",
        )
        paths["events"] = plots / "events_vs_horizon.png"
        save_figure(figure, paths["events"])
    for name, metric in STEP_METRICS.items():
        figure = horizon_plot(
            {METHODS[m]: v for m, v in curves[name].items()},
            metric.label,
            f"{summary['game']}: open-loop {name.upper().replace('_', ' ')} over {summary['starts']} rollouts",
            log_y=metric.log_y,
        )
        paths[name] = plots / f"{name}_vs_horizon.png"
        save_figure(figure, paths[name])
    return paths


# ------------------------------------------------------------------------------------------ W&B


def training_run(checkpoint: Path, state: dict[str, Any]) -> str | None:
    """The name of the training run a checkpoint comes from: its run folder's name (the W&B run's name and group),
    or its W&B id when the file lies outside a run folder; None when neither is known."""
    run = run_dir_of(checkpoint)
    return run.name if run is not None else state["wandb_id"]


def wandb_scores(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's headline numbers as eval/* keys: the ratios and the "alive" block at their steps, the event
    rates, the returns."""
    scores = {f"eval/mse_ratio_to_copy_h{k}": v for k, v in summary["mse_ratio_to_copy"].items()}
    scores |= {f"eval/action_gap_h{k}": v for k, v in summary["action_gap"].items()}
    scores |= {f"eval/mean_mse_ratio_to_copy_h{k}": v for k, v in summary.get("mean_mse_ratio_to_copy", {}).items()}
    scores |= {
        f"eval/{name}_h{k}": v for name, at in summary.get("alive", {}).items() for k, v in at.items() if v is not None
    }
    scores |= {
        f"eval/{key}_h{h}": v
        for h, rates in summary.get("events_at", {}).items()
        for key, v in rates.items()
        if v is not None
    }
    scores |= {f"eval/return_{key}": v for key, v in summary.get("return_fidelity", {}).items() if isinstance(v, float)}
    return scores


def log_to_wandb(cfg: EvalConfig, subject: Subject, out: Path, summary: dict[str, Any], paths: dict[str, Path]) -> None:
    """The evaluation as a W&B run of job type "eval" in the group of the training run it scores (nothing when W&B is
    off): its settings as resolved and the checkpoint's config, the headline scores, the plots and the MP4s."""
    state, settings = subject.state, cfg.to_dict(**subject.decided())
    trained = {"run": training_run(subject.checkpoint, state), "wandb_id": state.get("wandb_id"), "step": state["step"]}
    logger = make_logger(
        subject.wandb,
        out,
        out.name,
        {"eval": settings, "trained": trained, "checkpoint_config": state["config"]},
        group=trained["run"],
        job_type="eval",
        setting="--wandb_mode",
    )
    logger.log(wandb_scores(summary), step=0)
    for key, path in paths.items():
        if not key.startswith("video_"):  # a plot
            logger.log_image(f"eval/{key}_vs_horizon", iio.imread(path)[..., :3], step=0)
        elif key.endswith("mp4"):
            logger.log_video(f"eval/{key.removesuffix('_mp4')}", path, step=0)
    logger.close()


# ------------------------------------------------------------------------------------------ the report


def figures(values: Iterable[float | None], digits: int = 2) -> str:
    """'0.12/0.50/-': values at the headline steps, '-' where nothing was counted (None) or it is not a number (a
    model that diverged: NaN)."""
    return "/".join("-" if v is None or math.isnan(v) else f"{v:.{digits}f}" for v in values)


def alive_line(alive: dict[str, dict[str, float | None]]) -> str:
    """summary.json's "alive" block but the ball on one line: each figure at every headline step."""
    steps = "/".join(next(iter(alive.values())))
    parts = ", ".join(
        f"{name.replace('_', ' ')} {figures(at.values())}" for name, at in alive.items() if not name.startswith("ball")
    )
    return f"alive at h={steps} (1 right; recall and motion 0: frozen)  {parts}"


def ball_line(alive: dict[str, dict[str, float | None]], ball: dict) -> str:
    """The ball's figures of the "alive" block on one line, with the cases the distance is the mean of."""
    present, distance = alive["ball_present"], alive["ball_distance"]
    counted = "/".join(str(ball["counted"][int(k) - 1]) for k in distance)
    return (
        f"ball at h={'/'.join(present)}  shown {figures(present.values())} of the steps with the real ball in the "
        f"searched area (1 right), {figures(distance.values(), 1)} px from it (0 right; on {counted} cases)"
    )


def report(result: dict[str, Any]) -> str:
    """The headline numbers and where the files are, as the command ends."""
    ratios = ", ".join(f"h={k}: {figures([v], 3)}" for k, v in result["mse_ratio_to_copy"].items())
    gaps = ", ".join(f"h={k}: {figures([v], 3)}" for k, v in result["action_gap"].items())
    sharp = ", ".join(
        f"h={k}: {figures([result['sharpness']['model'][int(k) - 1]], 3)}" for k in result["mse_ratio_to_copy"]
    )
    lines = [
        f"model MSE / copy-last MSE  {ratios}",
        f"action gap (shuffled / true)  {gaps}",
        f"sharpness (1 right, < 1 blur, > 1 noise)  {sharp}",
    ]
    if result.get("alive"):
        lines.append(alive_line(result["alive"]))
    if result.get("ball"):
        lines.append(ball_line(result["alive"], result["ball"]))
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
            f"h={h}: reward sign right {rate('reward_sign_accuracy', 3)}, false rewards "
            f"{rate('false_reward_rate', 4)}, ends: precision {rate('end_precision')}, recall {rate('end_recall')}"
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
