"""Frames of several checkpoints side by side at chosen steps ahead, on bench_quality's held-out test windows.

    python benchmarks/side_by_side.py
        --checkpoints runs/bench_quality/runs/<unet_film run>,runs/bench_quality/runs/<edm run>
        [--steps 1,10,50] [--windows 4] [--out_dir runs/bench_quality] [--out side_by_side.png]

What the MSE and sharpness columns of bench_quality summarise, to be looked at: for --windows test windows spread
over bench_quality's test set of the checkpoints' game (the same fresh episodes, seed --seed + 1000, the same
windows), one row each, and for every step of --steps a column per checkpoint after the true frame. Every model
rolls out open loop from the window's context with the true actions and its own feedback; a stochastic model (edm)
shows one sample (sampling seeded with --seed). Under the picture, per checkpoint and step, over every test window:
MSE over copying the last frame and sharpness (the prediction's gradient magnitude over the true frame's: 1 right,
< 1 blur, > 1 noise). Writes the PNG (default <out_dir>/side_by_side.png) and prints the figures as a table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quality import BUDGETS, EVAL_BATCH_SIZE, EVAL_SEED_OFFSET, HORIZON, held_out_windows  # noqa: E402
from src.evaluation.cases import spread  # noqa: E402
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint  # noqa: E402
from src.models.diffusion import seed_sampling  # noqa: E402
from src.models.rollout import Feedback, rollout  # noqa: E402
from src.models.run import TrainedOn, find_checkpoint  # noqa: E402
from src.utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.utils.frames import frames_to_float  # noqa: E402
from src.utils.metrics import mse_per_sample, sharpness  # noqa: E402
from src.utils.plots import save_figure  # noqa: E402


def predictions(checkpoint: Path, context: np.ndarray, actions: np.ndarray, seed: int) -> tuple[str, np.ndarray]:
    """(the checkpoint's model name, its open-loop rollouts (N, K, H, W) float in [0, 1] as fed back)."""
    state = read_checkpoint(checkpoint)
    model = model_from_checkpoint(state).eval()
    seed_sampling(model, seed)
    feedback = Feedback.of(model_config(state))
    out = [
        rollout(
            model,
            frames_to_float(torch.from_numpy(context[i : i + EVAL_BATCH_SIZE])),
            torch.from_numpy(actions[i : i + EVAL_BATCH_SIZE]),
            feedback,
        )
        for i in range(0, len(context), EVAL_BATCH_SIZE)
    ]
    return model_config(state).name, torch.cat(out).numpy()


def last_checkpoint(path: Path) -> Path:
    """A run folder's checkpoints/last.pt (what bench_quality scores), else what src.eval would take."""
    return (
        path / "checkpoints" / "last.pt"
        if (path / "checkpoints" / "last.pt").is_file()
        else find_checkpoint(path, "weights", "--checkpoints")
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/side_by_side.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoints", required=True, help="comma list of run folders (their checkpoints/last.pt) or .pt files"
    )
    p.add_argument(
        "--steps", default="1,10,50", help=f"comma list of steps ahead to show, at most {HORIZON} (default 1,10,50)"
    )
    p.add_argument("--windows", type=int, default=4, help="test windows shown, one per row (default 4)")
    p.add_argument("--budget", default="cpu", choices=list(BUDGETS), help="whose test set (default cpu)")
    p.add_argument(
        "--out_dir", default=str(ROOT / "runs" / "bench_quality"), help="bench_quality's folder: its data/<game>"
    )
    p.add_argument("--seed", type=int, default=0, help="bench_quality's --seed (default 0); also seeds the sampling")
    p.add_argument("--out", default=None, help="the PNG (default <out_dir>/side_by_side.png)")
    args = p.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--steps must be a comma list of integers, e.g. 1,10,50, got '{args.steps}'") from None
    if not steps or not all(1 <= s <= HORIZON for s in steps):
        raise UserError(f"--steps must be steps ahead in [1, {HORIZON}], got '{args.steps}'")
    if args.windows < 1:
        raise UserError(f"--windows must be >= 1, got {args.windows}")
    checkpoints = [last_checkpoint(Path(c.strip())) for c in args.checkpoints.split(",") if c.strip()]
    games = {TrainedOn.of(read_checkpoint(c)).game for c in checkpoints}
    if len(games) != 1:
        raise UserError(f"the checkpoints are of different games ({', '.join(sorted(games))}); compare one game's")
    game = games.pop()
    data_dir = Path(args.out_dir) / "data" / game
    if not data_dir.is_dir():
        raise UserError(
            f"'{data_dir}' does not exist: run benchmarks/bench_quality.py --budget {args.budget} first "
            "(or pass its --out_dir)"
        )
    windows, _ = held_out_windows(data_dir, BUDGETS[args.budget], args.seed + EVAL_SEED_OFFSET)

    truth = frames_to_float(torch.from_numpy(windows.truth))  # (N, K, H, W)
    copy_last = frames_to_float(torch.from_numpy(windows.context[:, -1:]))  # (N, 1, H, W)
    shown = spread(len(windows.actions), args.windows)
    names, rolled = [], []
    print(f"| checkpoint | model | {' | '.join(f'ratio h{s} | sharp h{s}' for s in steps)} |")
    print("| --- | --- |" + " ---: | ---: |" * len(steps))
    for checkpoint in checkpoints:
        name, predicted = predictions(checkpoint, windows.context, windows.actions, args.seed)
        names.append(name)
        rolled.append(predicted)
        figures = []
        for s in steps:
            at = torch.from_numpy(predicted[:, s - 1])
            ratio = mse_per_sample(at, truth[:, s - 1]).mean() / mse_per_sample(copy_last[:, 0], truth[:, s - 1]).mean()
            figures += [f"{ratio:.3f}", f"{sharpness(at, truth[:, s - 1]).mean():.3f}"]
        print(f"| {checkpoint.parent.parent.name} | {name} | {' | '.join(figures)} |", flush=True)

    columns = [
        c
        for s in steps
        for c in [("truth", s, windows.truth[:, s - 1] / 255)]
        + [(name, s, frames[:, s - 1]) for name, frames in zip(names, rolled)]
    ]
    fig = Figure(figsize=(1.4 * len(columns), 1.5 * len(shown) + 0.3), dpi=100)
    FigureCanvasAgg(fig)
    for r, window in enumerate(shown):
        for c, (label, s, frames) in enumerate(columns):
            ax = fig.add_subplot(len(shown), len(columns), r * len(columns) + c + 1)
            ax.imshow(frames[window], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{label}\nh={s}", fontsize=8)
    fig.tight_layout()
    out = Path(args.out) if args.out else Path(args.out_dir) / "side_by_side.png"
    save_figure(fig, out)
    print(f"{len(shown)} windows x {len(columns)} columns: {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
