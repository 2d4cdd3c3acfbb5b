"""How well does each model variant predict, given the same wall-clock training budget and the same test cases?

    python benchmarks/bench_quality.py --budget cpu [--games Pong] [--variants unet_film,oh2015] [--minutes 10]
                                       [--seeds 0,1,2] [--out_dir runs/bench_quality] [--seed 0] [--device cpu]

For each game of the budget:
  data      one dataset recorded by `python -m src.dataset.generate_dataset` (random policy, --seed, the
            budget's steps and a fixed --num_envs, so that a budget's dataset is the same on every machine)
            into <out_dir>/data/<game>; --resume makes a re-run reuse a finished dataset.
  test      fresh episodes of the real game played with the dataset's env settings and a random policy, seeded
            with --seed + 1000 (not the training data's seed): held-out episodes, not held-out rows. From
            evenly spread start points, windows of 100 steps: the same windows score every variant of the game.
  variants  each trained once per training seed (--seeds: train.seed, which draws the weights, the split and
            the sample order) with `src.train.train` for the budget's minutes (train.max_minutes, plus a
            train.max_steps cap) from config.yaml + the budget's and the variant's overrides, into
            <out_dir>/runs/; then its checkpoints/last.pt (the model at the end of the budget) rolls out
            open loop on the test windows with src.eval's code (and, for some variants, with other feedback).
Columns, per variant: the mean over its seeds, and ± their standard deviation when there are several
  seeds       training seeds run
  steps       optimizer steps reached in the budget
  ratio hK    model MSE / copy-last-frame MSE at K steps ahead (below 1: beats copying the last context frame)
  gap hK      MSE with another window's actions / MSE with the true actions (1: the action is ignored)
  sharp h100  the prediction's mean gradient magnitude over the true frame's at 100 steps (1 right, < 1 blur, > 1 noise)
  vs default  the ratio columns where the variant's seeds and the default's (the table's first row) do not
              overlap at all: a difference larger than the spread between training seeds
A second table per game: is the imagined game alive (src.eval's "alive" block; 1 is right for each)
  recall hK     of the pixels the real game changes (> 2/255) at step K, the share the prediction changes too
  precision h10 of the pixels the prediction changes, the share the real game changes too
  motion h100   the prediction's mean change per step over the real game's (0: frozen)
  objects h50   pixels off the background, the prediction's over the truth's (> 1: smear, < 1: things vanished)
  ball present hK   of the steps with the real ball (from the RAM; Pong and Breakout) in find_ball's searched area,
                    the share where the prediction shows a ball (1 right)
  ball dist h10     pixels from the predicted ball to the real one, over the steps with both (0 right)
A stochastic variant (edm) rolls out SAMPLES times per window: its row scores one sample (averaged over them), and a row
"<variant>, mean of N samples" the mean frame of the samples. A third table per game: SSIM and sharpness at each of
h1, h10, h50, h100, training samples/s, and imagined frames/s on EVAL_BATCH_SIZE games at once (for edm at 1, 3 and 10
denoising steps).
The copy-last MSE is printed under each table, with how far the two halves of the test windows (odd and even
episodes) disagree about the default's ratios: the noise of the test set itself.
Writes <out_dir>/results.json (merged: re-running a variant's seed replaces it; each is saved as soon as it
finishes) and <out_dir>/results.md (the tables).
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import Config, load_config  # noqa: E402
from src.dataset.manifest import MANIFEST, Manifest  # noqa: E402
from src.envs.atari import EnvSettings, resolve_game  # noqa: E402
from src.envs.ball import tracks_ball  # noqa: E402
from src.envs.game import play_episodes  # noqa: E402
from src.eval import alive, evaluate, headline, summarise  # noqa: E402
from src.evaluation.ball import ball_block  # noqa: E402
from src.evaluation.cases import Windows, spread, windows_from_episodes  # noqa: E402
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint  # noqa: E402
from src.models.diffusion import is_stochastic  # noqa: E402
from src.models.rollout import Feedback, rollout  # noqa: E402
from src.models.run import TrainedOn  # noqa: E402
from src.training.loop import train  # noqa: E402
from src.utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.utils.frames import frames_to_float  # noqa: E402
from src.utils.io import atomic_write_bytes, atomic_write_json  # noqa: E402

HORIZON = 100  # steps predicted open loop from each test start
EVAL_SEED_OFFSET = 1000  # test episodes are seeded with --seed + this, unlike the training data
EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class Budget:
    games: tuple[str, ...]
    dataset_steps: int
    minutes: float  # training wall clock per variant
    max_steps: int  # a cap; the minutes are the real budget
    episodes: int  # fresh test episodes per game
    starts_per_episode: int  # test windows per episode
    overrides: tuple[str, ...] = ()  # config overrides for every variant
    generate_flags: tuple[str, ...] = ()  # extra flags for the dataset generator


BUDGETS = {
    # Pong, and two games unlike it: Breakout, the other game where a ball of a few pixels decides (its position is
    # read from the RAM, so the ball columns score it), and Boxing, where big sprites move (3.1% of the pixels change
    # per step against Pong's 0.6%) and the action moves one of them: a default tuned to small objects shows there.
    "cpu": Budget(
        ("Pong", "Breakout", "Boxing"),
        30_000,
        minutes=10,
        max_steps=100_000,
        episodes=8,
        starts_per_episode=12,
        generate_flags=("--num_envs", "4"),
    ),
    "gpu": Budget(
        ("Pong", "Breakout", "Boxing"),
        300_000,
        minutes=20,
        max_steps=1_000_000,
        episodes=8,
        starts_per_episode=16,
        overrides=("profile=gpu",),  # config.PROFILES["gpu"]
        generate_flags=("--num_envs", "16"),
    ),
    # For the smoke test: short episodes so that a 1,500-step dataset holds several, and a very small model.
    "tiny": Budget(
        ("Pong",),
        1_500,
        minutes=0.05,
        max_steps=4,
        episodes=2,
        starts_per_episode=1,
        overrides=(
            "model.channels=[8,16]",
            "model.action_embed_dim=8",
            "model.hidden_dim=32",
            "train.batch_size=8",
            "train.val_batches=2",
            "train.warmup_steps=1",
            "train.log_every=2",
            "train.val_every_steps=2",
        ),
        generate_flags=("--num_envs", "4", "--max_episode_steps", "200", "--shard_size", "500"),
    ),
}

# name -> (what it tests, config overrides). A new variant is one line. The first is the default, that the others
# are compared with.
VARIANTS = {
    "unet_film": ("the default U-Net with FiLM action conditioning, one-step training, palette feedback", []),
    "unet_film_pf1": (
        "unet_film, pushforward: up to half the samples on one step of its own, from half the budget",
        ["train.pushforward=0.5", "train.pushforward_steps=1"],
    ),
    "unet_film_pf2": (
        "unet_film, pushforward: up to half the samples on two steps of their own, from 0.2 of the budget",
        ["train.pushforward=0.5", "train.pushforward_steps=2", "train.pushforward_start=0.2"],
    ),
    "unet_film_palette_out": (
        "unet_film with a per-pixel classification over the 16 palette levels (cross-entropy)",
        ["model.output=palette"],
    ),
    "unet_film_pf4": (
        "unet_film, pushforward: up to half the samples on four steps of their own, from 0.2 of the budget",
        ["train.pushforward=0.5", "train.pushforward_steps=4", "train.pushforward_start=0.2"],
    ),
    "oh2015": (
        "Oh et al. 2015 action-conditional transformation, the paper's conv widths",
        ["model.name=oh2015", "model.channels=[64,128,128,128]"],
    ),
    "unet_diamond": ("DIAMOND-style U-Net", ["model.name=unet_diamond"]),
    "unet_film_k3": (
        "unet_film, multi-step curriculum 1 -> 3",
        ["train.rollout_steps=[1,3]", "train.rollout_stage_ends=[0.5]"],
    ),
    "unet_film_k5": (
        "unet_film, Oh et al.'s curriculum 1 -> 3 -> 5",
        ["train.rollout_steps=[1,3,5]", "train.rollout_stage_ends=[0.4,0.7]"],
    ),
    "unet_film_changed": ("unet_film, loss weighted 5x on changed pixels", ["train.changed_pixel_weight=4"]),
    "unet_film_warp": (
        "unet_film predicting a flow that moves the last frame, plus a change (flow guide 0.1)",
        ["model.output=warp"],
    ),
    "unet_film_worst": (
        "unet_film, plus the mean loss of each frame's worst 1% of pixels",
        ["train.worst_pixel_weight=1"],
    ),
    "edm": (
        "diffusion (EDM, as DIAMOND): unet_film denoising the change from the last frame, 3 Euler steps",
        ["model.name=edm"],
    ),
    "edm_frame": (
        "edm diffusing the next frame itself, as DIAMOND",
        ["model.name=edm", "model.diffusion.target=frame"],
    ),
}
# The default variant's checkpoints of the first seed run are also scored with these feedbacks (the same weights).
OTHER_FEEDBACK = ("uint8", "float")
SAMPLES = 4  # rollouts per test window of a stochastic variant (edm): scored one at a time, and their mean frame
SAMPLING_STEPS = (1, 3, 10)  # a stochastic variant's imagination speed is measured at each of these denoising steps
SPEED_STEPS = 20  # imagined steps per speed measurement, on the first EVAL_BATCH_SIZE test windows


# ------------------------------------------------------------------------------------------ set-up


def pick(names: str | None, known: list[str], what: str) -> list[str]:
    """A comma list checked against `known` (all of them when None); an unknown name is a UserError."""
    if names is None:
        return list(known)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    for name in chosen:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown {what} '{name}'.{hint} (known: {', '.join(known)})")
    if not chosen:
        raise UserError(f"--{what}s is empty; give a comma list such as {known[0]}")
    return chosen


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def variant_config(
    budget: Budget, variant: str, data_dir: Path, out_dir: Path, minutes: float, device: torch.device, train_seed: int
) -> Config:
    """config.yaml + the budget's overrides + the variant's + where this benchmark puts data, runs and the time
    budget."""
    overrides = [
        *budget.overrides,
        *VARIANTS[variant][1],
        f"data.dir={data_dir}",
        f"experiment.runs_dir={out_dir / 'runs'}",
        f"experiment.name={variant}_s{train_seed}",
        "train.val_rollout_enabled=false",
        "experiment.wandb.mode=disabled",
        f"train.max_minutes={minutes}",
        f"train.max_steps={budget.max_steps}",
        f"train.seed={train_seed}",
    ]
    if device.type == "cpu":
        overrides.append("train.cpu=true")
    return load_config(ROOT / "config.yaml", overrides)


def make_dataset(game: str, root: Path, budget: Budget, seed: int) -> None:
    """Record (or finish, or reuse) the game's dataset in a subprocess; its progress bar goes to the console."""
    if (root / MANIFEST).is_file():
        manifest = Manifest.read(root)
        if (manifest.target_steps, manifest.seed) != (budget.dataset_steps, seed):
            raise UserError(
                f"'{root}' holds a dataset of {manifest.target_steps} steps with seed {manifest.seed}; "
                f"this budget needs {budget.dataset_steps} with seed {seed}: choose another --out_dir"
            )
    cmd = [sys.executable, "-m", "src.dataset.generate_dataset", "--game", game, "--steps", str(budget.dataset_steps)]
    cmd += ["--out_dir", str(root), "--seed", str(seed), "--resume", *budget.generate_flags]
    print(f"[{game}] dataset: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd, cwd=ROOT, check=False).returncode != 0:
        raise UserError(f"recording the {game} dataset into '{root}' failed (the generator's message is above)")


def held_out_windows(data_dir: Path, budget: Budget, seed: int) -> tuple[Windows, dict]:
    """The game's held-out test windows, played with the dataset's env settings; and how they were made (with the
    episode of each window, for the two halves of the test set)."""
    env = Manifest.read(data_dir).env.to_dict()
    start = time.perf_counter()
    settings = EnvSettings.from_dict(env)
    episodes = play_episodes(settings, budget.episodes, seed, ball=tracks_ball(settings))  # Pong's, Breakout's ball
    windows = windows_from_episodes(episodes, HORIZON, budget.starts_per_episode)
    window_episode = [
        i for i, e in enumerate(episodes) for _ in spread(len(e.action) - HORIZON + 1, budget.starts_per_episode)
    ]
    info = {
        "episodes": budget.episodes,
        "episode_steps": [len(e.action) for e in episodes],
        "windows": len(windows.actions),
        "horizon": HORIZON,
        "seed": seed,
        "env": env,
        "window_episode": window_episode,
    }
    print(
        f"[{env['game']}] test: {info['windows']} windows of {HORIZON} steps from "
        f"{plural(budget.episodes, 'fresh episode')} "
        f"({sum(info['episode_steps']):,} steps, seed {seed}) in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    return windows, info


# ------------------------------------------------------------------------------------------ one variant


def score(
    model: torch.nn.Module, windows: Windows, test_info: dict, device: torch.device, feedback: Feedback
) -> tuple[dict, dict]:
    """The checkpoint's headline figures on the test windows (and on each half of them), and the copy-last MSE. A
    stochastic model's figures are those of one sample (averaged over SAMPLES), and under "sample_mean" those of the
    mean frame of the SAMPLES samples."""
    game = test_info["env"]["game"]
    errors = evaluate(model, windows, EVAL_BATCH_SIZE, device, test_info["seed"], feedback, samples=SAMPLES, game=game)
    curves = summarise(errors)
    ratio, gap = headline(curves, HORIZON)
    ball = ball_block(errors["ball"]) if "ball" in errors else None
    odd = np.array(test_info["window_episode"]) % 2 == 1
    halves = [
        headline(
            summarise({m: {k: v[part] for k, v in e.items()} for m, e in errors.items() if m in curves["mse"]}), HORIZON
        )[0]
        for part in (odd, ~odd)
    ]
    at = lambda metric, method="model": {k: curves[metric][method][int(k) - 1] for k in ratio}  # noqa: E731
    figures = {
        "feedback": feedback.kind,
        "mse_ratio_to_copy": ratio,
        "action_gap": gap,
        "model_mse": at("mse"),
        "sharpness": at("sharpness"),
        "ssim": at("ssim"),
        "psnr_h1": curves["psnr"]["model"][0],
        "ssim_h1": curves["ssim"]["model"][0],
        "ratio_halves": halves if odd.any() and (~odd).any() else None,
        "alive": alive(curves, HORIZON, ball=ball),
    }
    if ball:
        figures["ball_counted"] = {k: ball["counted"][int(k) - 1] for k in ratio}  # the cases of ball_distance
    if "model_mean" in curves["mse"]:
        figures["sample_mean"] = {
            "samples": SAMPLES,
            "mse_ratio_to_copy": headline(curves, HORIZON, "model_mean")[0],
            "action_gap": gap,
            "model_mse": at("mse", "model_mean"),
            "sharpness": at("sharpness", "model_mean"),
            "ssim": at("ssim", "model_mean"),
            "alive": alive(curves, HORIZON, "model_mean"),
        }
    return figures, {k: curves["mse"]["copy_last"][int(k) - 1] for k in ratio}


def imagination_speed(
    model: torch.nn.Module, windows: Windows, device: torch.device, feedback: Feedback
) -> dict[str, float]:
    """Imagined frames per second (one batch of EVAL_BATCH_SIZE windows, SPEED_STEPS steps, after one warm-up step): one
    figure for a deterministic model ("-"), one per denoising step count of SAMPLING_STEPS for a stochastic one."""
    context = frames_to_float(torch.from_numpy(windows.context[:EVAL_BATCH_SIZE]).to(device))
    actions = torch.from_numpy(windows.actions[:EVAL_BATCH_SIZE, :SPEED_STEPS]).to(device)
    model.eval()
    speeds = {}
    for steps in SAMPLING_STEPS if is_stochastic(model) else (None,):
        if steps is not None:
            saved, model.diffusion.steps = model.diffusion.steps, steps
        rollout(model, context, actions[:, :1], feedback)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        rollout(model, context, actions, feedback)
        synchronize(device)
        speeds["-" if steps is None else str(steps)] = actions.numel() / (time.perf_counter() - start)
        if steps is not None:
            model.diffusion.steps = saved
    return speeds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(
    cfg: Config, windows: Windows, test_info: dict, device: torch.device, feedbacks: tuple[str, ...] = ()
) -> tuple[dict, dict[str, float]]:
    """Train for the budget, then score checkpoints/last.pt on the test windows (also with each of `feedbacks`, under
    "other_feedback"). Returns (row, copy-last MSE per step)."""
    torch._dynamo.reset()  # compiled graphs are cached per model class: each variant compiles (and pays for it) afresh
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert TrainedOn.of(state).env_settings == test_info["env"], (
        "the run's dataset is not the one the test episodes were played for"
    )
    model = model_from_checkpoint(state).to(device)
    figures, copy_last = score(model, windows, test_info, device, Feedback.of(model_config(state)))
    row = {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "steps": result["step"],
        "checkpoint_step": state["step"],
        "train_minutes": seconds / 60,
        "samples_per_s": result["step"] * cfg.train.batch_size / seconds,  # set-up and validations included
        **figures,
        "imagined_frames_per_s": imagination_speed(model, windows, device, Feedback.of(model_config(state))),
        "other_feedback": {kind: score(model, windows, test_info, device, Feedback(kind))[0] for kind in feedbacks},
        "val_ratio_to_copy": result.get("val/ratio_to_copy"),  # one step ahead, on the dataset's val episodes
        "val_changed_recall": result.get("val/changed_recall"),  # of the same one-step predictions
        "run_dir": result["run_dir"],
    }
    return row, copy_last


# ------------------------------------------------------------------------------------------ results


def load_results(path: Path, budget: str, seed: int) -> dict:
    """The results so far in out_dir; another budget's or seed's are refused rather than mixed in."""
    if not path.is_file():
        return {"budget": budget, "seed": seed, "games": {}}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"'{path}' is not valid JSON ({e}); move it away or choose another --out_dir") from None
    if (results.get("budget"), results.get("seed")) != (budget, seed):
        raise UserError(
            f"'{path}' holds results of budget {results.get('budget')} with seed {results.get('seed')}; "
            f"choose another --out_dir for budget {budget} with seed {seed}"
        )
    return results


def save_results(out_dir: Path, results: dict) -> None:
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_bytes(out_dir / "results.md", markdown(results).encode())


STEPS = ("1", "10", "50", "100")
COLUMNS = [
    "variant",
    "seeds",
    "steps",
    *(f"ratio h{k}" for k in STEPS),
    "gap h1",
    "gap h10",
    "sharp h100",
    "vs default",
]


def rows_of(variants: dict) -> dict[str, list[dict]]:
    """Table rows -> the figures of each seed: every variant, and the default's checkpoints with other feedback."""
    rows = {}
    for name, entry in variants.items():
        seeds = [r for r in entry["seeds"].values() if "error" not in r]
        rows[name] = seeds
        for kind in dict.fromkeys(k for r in seeds for k in r.get("other_feedback") or {}):  # in order, once each
            rows[f"{name}, {kind} feedback"] = [
                {**r, **r["other_feedback"][kind]} for r in seeds if kind in r.get("other_feedback", {})
            ]
        means = [{**r, **r["sample_mean"]} for r in seeds if r.get("sample_mean")]
        if means:
            rows[f"{name}, mean of {means[0]['samples']} samples"] = means
    return rows


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def beyond_noise(seeds: list[dict], default: list[dict]) -> str:
    """The ratio columns where this row's seeds all lie on one side of the default's: better (-) or worse (+)."""
    marks = []
    for k in STEPS:
        mine, theirs = [r["mse_ratio_to_copy"].get(k) for r in seeds], [r["mse_ratio_to_copy"].get(k) for r in default]
        if None in mine or None in theirs or len(mine) < 2 or len(theirs) < 2:
            continue
        if max(mine) < min(theirs):
            marks.append(f"h{k} better")
        elif min(mine) > max(theirs):
            marks.append(f"h{k} worse")
    return ", ".join(marks) or "-"


def table_row(name: str, seeds: list[dict], default: list[dict], failed: list[str]) -> list[str]:
    if not seeds:
        return [name, "failed: " + "; ".join(failed).replace("|", "\\|"), *[""] * (len(COLUMNS) - 2)]
    get = lambda key, k: [r[key][k] for r in seeds if k in r[key]]  # noqa: E731
    return [
        name,
        str(len(seeds)),
        f"{np.mean([r['steps'] for r in seeds]):,.0f}",
        *(mean_sd(get("mse_ratio_to_copy", k)) if get("mse_ratio_to_copy", k) else "-" for k in STEPS),
        *(mean_sd(get("action_gap", k)) if get("action_gap", k) else "-" for k in ("1", "10")),
        mean_sd(get("sharpness", "100")) if get("sharpness", "100") else "-",
        "(the default)" if seeds is default else beyond_noise(seeds, default),
    ]


ALIVE_COLUMNS = {  # column: (the "alive" figure, at this step)
    "recall h10": ("changed_recall", "10"),
    "recall h50": ("changed_recall", "50"),
    "precision h10": ("changed_precision", "10"),
    "motion h100": ("motion", "100"),
    "objects h50": ("objects", "50"),
    "ball present h10": ("ball_present", "10"),
    "ball present h50": ("ball_present", "50"),
    "ball dist h10": ("ball_distance", "10"),
}


def alive_row(name: str, seeds: list[dict]) -> list[str]:
    """The ALIVE_COLUMNS of a row: mean ± sd over the seeds that counted something ('-' for none)."""
    cells = []
    for figure, k in ALIVE_COLUMNS.values():
        values = [v for r in seeds if (v := r.get("alive", {}).get(figure, {}).get(k)) is not None]
        cells.append(mean_sd(values) if values else "-")
    return [name, *cells]


SECOND_COLUMNS = [
    "variant",
    *(f"ssim h{k}" for k in STEPS),
    *(f"sharp h{k}" for k in STEPS),
    "train samples/s",
    "imagined frames/s",
]


def second_row(name: str, seeds: list[dict]) -> list[str]:
    """SSIM and sharpness at every headline step, training samples/s and imagined frames/s (per denoising step count
    for a stochastic model: "1: x, 3: y")."""
    get = lambda key, k: [r[key][k] for r in seeds if k in r.get(key, {})]  # noqa: E731
    speeds = [r.get("imagined_frames_per_s") or {} for r in seeds]
    imagined = ", ".join(
        f"{'' if k == '-' else f'{k}: '}{np.mean([s[k] for s in speeds if k in s]):,.0f}"
        for k in dict.fromkeys(k for s in speeds for k in s)
    )
    return [
        name,
        *(mean_sd(get("ssim", k)) if get("ssim", k) else "-" for k in STEPS),
        *(mean_sd(get("sharpness", k)) if get("sharpness", k) else "-" for k in STEPS),
        f"{np.mean([r['samples_per_s'] for r in seeds]):,.0f}",
        imagined or "-",
    ]


def test_noise(rows: list[dict]) -> str:
    """How far the two halves of the test windows disagree about the ratios, the largest over the seeds."""
    halves = [r["ratio_halves"] for r in rows if r.get("ratio_halves")]
    if not halves:
        return "-"
    return ", ".join(
        f"h={k} {max(abs(a[k] - b[k]) for a, b in halves if k in a):.3f}" for k in STEPS if k in halves[0][0]
    )


def markdown(results: dict) -> str:
    """One table per game, variants in VARIANTS order (names no longer in VARIANTS last), and the copy-last MSE."""
    parts = []
    for game, entry in results["games"].items():
        budget, test = entry["budget"], entry["test"]
        variants = entry["variants"]
        names = [n for n in VARIANTS if n in variants] + [n for n in variants if n not in VARIANTS]
        rows = rows_of({n: variants[n] for n in names})
        default = rows.get(next(iter(VARIANTS)), [])
        failed = {
            n: [f"seed {s}: {r['error']}" for s, r in variants[n]["seeds"].items() if "error" in r] for n in names
        }
        lines = [f"| {' | '.join(COLUMNS)} |", "| --- |" + " ---: |" * (len(COLUMNS) - 2) + " --- |"]
        lines += [f"| {' | '.join(table_row(n, seeds, default, failed.get(n, [])))} |" for n, seeds in rows.items()]
        living = [f"| variant | {' | '.join(ALIVE_COLUMNS)} |", "| --- |" + " ---: |" * len(ALIVE_COLUMNS)]
        living += [f"| {' | '.join(alive_row(n, seeds))} |" for n, seeds in rows.items() if seeds]
        second = [f"| {' | '.join(SECOND_COLUMNS)} |", "| --- |" + " ---: |" * (len(SECOND_COLUMNS) - 1)]
        second += [f"| {' | '.join(second_row(n, seeds))} |" for n, seeds in rows.items() if seeds]
        copy = ", ".join(f"h={k} {v:.3g}" for k, v in (entry["copy_last_mse"] or {}).items())
        parts.append(
            f"### {game}\n\nBudget {results['budget']}: {budget['minutes']:g} min per variant and seed "
            f"(max {budget['max_steps']:,} steps), {budget['dataset_steps']:,}-step dataset (seed {results['seed']}); "
            f"{test['windows']} test windows of {test['horizon']} steps from "
            f"{plural(test['episodes'], 'fresh episode')} (seed {test['seed']}). Mean ± standard deviation over the "
            f"training seeds.\n\n"
            + "\n".join(lines)
            + f"\n\nCopy-last MSE on the same windows: {copy or '-'}. The two halves of the test windows disagree "
            f"about the default's ratio by at most: {test_noise(default)}.\n\nIs the imagined game alive: "
            f"changed-pixel recall and precision (a pixel changes by more than 2/255 from the frame before), motion "
            f"and objects ratios (1 right; recall and motion 0: frozen, objects > 1: smear); the ball, in Pong and "
            f"Breakout: the share of the steps with the real ball where the prediction shows one, and how many "
            f"pixels from the real one (- for a game whose ball is not tracked).\n\n"
            + "\n".join(living)
            + "\n\nSSIM and sharpness (the prediction's "
            f"gradient magnitude over the true frame's: 1 right, < 1 blur, > 1 noise) at each step ahead; training "
            f"samples/s (set-up and validation included); imagined frames/s on {EVAL_BATCH_SIZE} games at once (a "
            f"diffusion model: per number of denoising steps).\n\n" + "\n".join(second) + "\n"
        )
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/bench_quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", required=True, choices=list(BUDGETS), help="games, dataset size, minutes and test set")
    p.add_argument("--games", default=None, help="comma list (default: the budget's)")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)} (default all)")
    p.add_argument(
        "--seeds", default="0", help="comma list of training seeds, each variant trained once per seed (default 0)"
    )
    p.add_argument(
        "--minutes", type=float, default=None, help="training minutes per variant and seed (default: the budget's)"
    )
    p.add_argument(
        "--out_dir",
        default=str(ROOT / "runs" / "bench_quality"),
        help="datasets, runs and results (default runs/bench_quality)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the datasets; the test episodes use seed + 1000 (default 0)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    args = p.parse_args(argv)
    budget = BUDGETS[args.budget]
    games = [resolve_game(g) for g in (args.games.split(",") if args.games else budget.games)]
    variants = pick(args.variants, list(VARIANTS), "variant")
    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--seeds must be a comma list of integers, e.g. 0,1,2, got '{args.seeds}'") from None
    if not seeds:
        raise UserError("--seeds is empty; give a comma list such as 0,1,2")
    minutes = budget.minutes if args.minutes is None else args.minutes
    if minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {minutes}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    out_dir = Path(args.out_dir).resolve()
    results = load_results(out_dir / "results.json", args.budget, args.seed)
    configs = {
        (g, v, s): variant_config(budget, v, out_dir / "data" / g, out_dir, minutes, device, s)
        for g in games
        for v in variants
        for s in seeds
    }
    out_dir.mkdir(parents=True, exist_ok=True)

    for game in games:
        make_dataset(game, out_dir / "data" / game, budget, args.seed)
    failed = 0
    for game in games:
        windows, test_info = held_out_windows(out_dir / "data" / game, budget, args.seed + EVAL_SEED_OFFSET)
        runs = [
            (v, s) for s in seeds for v in variants
        ]  # every variant at a seed before the next seed: early rows compare
        for i, (variant, seed) in enumerate(runs, 1):
            print(
                f"[{game} {i}/{len(runs)}] {variant}, seed {seed}: {VARIANTS[variant][0]}; "
                f"training for {minutes:g} min on {device}",
                flush=True,
            )
            feedbacks = OTHER_FEEDBACK if variant == next(iter(VARIANTS)) and seed == seeds[0] else ()
            try:
                row, copy_last = run_variant(configs[game, variant, seed], windows, test_info, device, feedbacks)
            except UserError as e:  # e.g. a diverged loss: the other variants still run
                row, copy_last, failed = {"error": str(e)}, None, failed + 1
                print(f"[{game}] {variant}, seed {seed} failed: {e}", flush=True)
            old = results["games"].get(game, {})
            if old and old["test"].get("window_episode") != test_info["window_episode"]:
                old = {}  # results of another test set (an older version of this benchmark) are not comparable
            entry = results["games"][game] = {
                "budget": {"dataset_steps": budget.dataset_steps, "minutes": minutes, "max_steps": budget.max_steps},
                "test": {k: v for k, v in test_info.items() if k != "env"},
                "copy_last_mse": copy_last or old.get("copy_last_mse"),  # the same for every variant: the same windows
                "variants": old.get("variants", {}),
            }
            done = entry["variants"].setdefault(variant, {"seeds": {}})
            done.update(description=VARIANTS[variant][0], overrides=VARIANTS[variant][1])
            done["seeds"][str(seed)] = {
                **row,
                "minutes_budget": minutes,
                "device": str(device),
                "finished": datetime.now().isoformat(timespec="seconds"),
            }
            save_results(out_dir, results)
            if "error" not in row:
                ratios = ", ".join(f"h={k} {v:.3f}" for k, v in row["mse_ratio_to_copy"].items())
                print(
                    f"[{game}] {variant}, seed {seed}: {row['steps']:,} steps in {row['train_minutes']:.1f} min; "
                    f"MSE / copy-last "
                    f"{ratios}; saved to {out_dir / 'results.json'}",
                    flush=True,
                )
    print(f"\n{markdown(results)}\nresults: {out_dir / 'results.json'}, {out_dir / 'results.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
