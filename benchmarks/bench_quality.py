"""How well does each model variant predict, given the same wall-clock training budget and the same test cases?

    python benchmarks/bench_quality.py --budget cpu [--games Pong] [--variants unet_film,oh2015] [--minutes 10]
                                       [--out_dir runs/bench_quality] [--seed 0] [--device cpu]

For each game of the budget:
  data      one dataset recorded by `python -m src.dataset.generate_dataset` (random policy, --seed, the
            budget's steps and a fixed --num_envs, so that a budget's dataset is the same on every machine)
            into <out_dir>/data/<game>; --resume makes a re-run reuse a finished dataset.
  test      fresh episodes of the real game played with the dataset's env settings and a random policy, seeded
            with --seed + 1000 (not the training data's seed): held-out episodes, not held-out rows. From
            evenly spread start points, windows of 50 steps: the same windows score every variant of the game.
  variants  each trained with `src.train.train` for the budget's minutes (train.max_minutes, plus a
            train.max_steps cap) from config.yaml + the budget's and the variant's overrides, into
            <out_dir>/runs/; then its checkpoints/last.pt (the model at the end of the budget) rolls out
            open loop on the test windows with src.eval's code.
Columns, per variant:
  params      parameters, millions
  steps       optimizer steps reached in the budget
  train min   wall clock of train(), set-up and validations included
  ratio hK    model MSE / copy-last-frame MSE at K steps ahead (below 1: beats copying the last context frame)
  PSNR/SSIM   of the model at 1 step ahead (PSNR of the mean MSE, in dB)
  gap hK      MSE with another window's actions / MSE with the true actions (1: the action is ignored)
The copy-last MSE is printed under each table: the ratios are against it, measured on the same windows.
Writes <out_dir>/results.json (merged: re-running one variant replaces its row; each variant is saved as soon
as it finishes) and <out_dir>/results.md (the tables).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import Config, load_config  # noqa: E402
from src.dataset.manifest import MANIFEST, Manifest  # noqa: E402
from src.envs.atari import EnvSettings, resolve_game  # noqa: E402
from src.envs.game import play_episodes  # noqa: E402
from src.eval import Windows, evaluate, headline, summarise, windows_from_episodes  # noqa: E402
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint  # noqa: E402
from src.training.loop import train  # noqa: E402
from src.utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.utils.io import atomic_write_bytes, atomic_write_json  # noqa: E402

HORIZON = 50  # steps predicted open loop from each test start
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
    "cpu": Budget(("Pong",), 30_000, minutes=10, max_steps=100_000, episodes=4, starts_per_episode=16,
                  generate_flags=("--num_envs", "4")),
    "gpu": Budget(("Pong", "Breakout", "Boxing"), 300_000, minutes=20, max_steps=1_000_000, episodes=8, starts_per_episode=16,
                  overrides=("data.num_workers=4", "data.prefetch_factor=4", "data.persistent_workers=true", "data.pin_memory=true",
                             "train.batch_size=64", "train.val_every_steps=2000"),
                  generate_flags=("--num_envs", "16")),
    # For the smoke test: short episodes so that a 1,500-step dataset holds several, and a very small model.
    "tiny": Budget(("Pong",), 1_500, minutes=0.05, max_steps=4, episodes=1, starts_per_episode=2,
                   overrides=("model.channels=[8,16]", "model.action_embed_dim=8", "model.hidden_dim=32", "train.batch_size=8",
                              "train.val_batches=2", "train.warmup_steps=1", "train.log_every=2", "train.val_every_steps=2"),
                   generate_flags=("--num_envs", "4", "--max_episode_steps", "200", "--shard_size", "500")),
}

# name -> (what it tests, config overrides). A new variant is one line.
VARIANTS = {
    "unet_film": ("the default U-Net with FiLM action conditioning, one-step training", []),
    "oh2015": ("Oh et al. 2015 action-conditional transformation, the paper's conv widths", ["model.name=oh2015", "model.channels=[64,128,128,128]"]),
    "unet_diamond": ("DIAMOND-style U-Net", ["model.name=unet_diamond"]),
    "unet_film_k3": ("unet_film, multi-step curriculum 1 -> 3", ["train.rollout_steps=[1,3]", "train.rollout_stage_ends=[0.5]"]),
    "unet_film_k5": ("unet_film, Oh et al.'s curriculum 1 -> 3 -> 5", ["train.rollout_steps=[1,3,5]", "train.rollout_stage_ends=[0.4,0.7]"]),
    "unet_film_changed": ("unet_film, loss weighted 10x on changed pixels", ["train.changed_pixel_weight=10"]),
}


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


def variant_config(budget: Budget, variant: str, data_dir: Path, out_dir: Path, minutes: float, device: torch.device) -> Config:
    """config.yaml + the budget's overrides + the variant's + where this benchmark puts data, runs and the time budget."""
    overrides = [*budget.overrides, *VARIANTS[variant][1], f"data.dir={data_dir}", f"experiment.runs_dir={out_dir / 'runs'}",
                 f"experiment.name={variant}", "train.val_rollout_enabled=false", "experiment.wandb.mode=disabled",
                 f"train.max_minutes={minutes}", f"train.max_steps={budget.max_steps}"]
    if device.type == "cpu":
        overrides.append("train.cpu=true")
    return load_config(ROOT / "config.yaml", overrides)


def make_dataset(game: str, root: Path, budget: Budget, seed: int) -> None:
    """Record (or finish, or reuse) the game's dataset in a subprocess; its progress bar goes to the console."""
    if (root / MANIFEST).is_file():
        manifest = Manifest.read(root)
        if (manifest.target_steps, manifest.seed) != (budget.dataset_steps, seed):
            raise UserError(f"'{root}' holds a dataset of {manifest.target_steps} steps with seed {manifest.seed}; "
                            f"this budget needs {budget.dataset_steps} with seed {seed}: choose another --out_dir")
    cmd = [sys.executable, "-m", "src.dataset.generate_dataset", "--game", game, "--steps", str(budget.dataset_steps),
           "--out_dir", str(root), "--seed", str(seed), "--resume", *budget.generate_flags]
    print(f"[{game}] dataset: {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd, cwd=ROOT, check=False).returncode != 0:
        raise UserError(f"recording the {game} dataset into '{root}' failed (the generator's message is above)")


def held_out_windows(data_dir: Path, budget: Budget, seed: int) -> tuple[Windows, dict]:
    """The game's held-out test windows, played with the dataset's env settings; and how they were made."""
    env = Manifest.read(data_dir).env.to_dict()
    start = time.perf_counter()
    episodes = play_episodes(EnvSettings.from_dict(env), budget.episodes, seed)
    windows = windows_from_episodes(episodes, HORIZON, budget.starts_per_episode)
    info = {"episodes": budget.episodes, "episode_steps": [len(e.action) for e in episodes], "windows": len(windows.actions),
            "horizon": HORIZON, "seed": seed, "env": env}
    print(f"[{env['game']}] test: {info['windows']} windows of {HORIZON} steps from {plural(budget.episodes, 'fresh episode')} "
          f"({sum(info['episode_steps']):,} steps, seed {seed}) in {time.perf_counter() - start:.1f}s", flush=True)
    return windows, info


# ------------------------------------------------------------------------------------------ one variant


def run_variant(cfg: Config, windows: Windows, test_info: dict, device: torch.device) -> tuple[dict, dict[str, float]]:
    """Train for the budget, then score checkpoints/last.pt on the test windows. Returns (row, copy-last MSE per step)."""
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert state["dataset"]["env_settings"] == test_info["env"], "the run's dataset is not the one the test episodes were played for"
    model = model_from_checkpoint(state).to(device)
    curves = summarise(evaluate(model, windows, EVAL_BATCH_SIZE, device, test_info["seed"], model_config(state).feedback))
    ratio, gap = headline(curves, HORIZON)
    row = {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "steps": result["step"],
        "checkpoint_step": state["step"],
        "train_minutes": seconds / 60,
        "samples_per_s": result["step"] * cfg.train.batch_size / seconds,  # set-up and validations included
        "mse_ratio_to_copy": ratio,
        "model_mse": {k: curves["mse"]["model"][int(k) - 1] for k in ratio},
        "psnr_h1": curves["psnr"]["model"][0],
        "ssim_h1": curves["ssim"]["model"][0],
        "action_gap": gap,
        "val_ratio_to_copy": result.get("val/ratio_to_copy"),  # one step ahead, on the dataset's val episodes
        "run_dir": result["run_dir"],
    }
    return row, {k: curves["mse"]["copy_last"][int(k) - 1] for k in ratio}


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
        raise UserError(f"'{path}' holds results of budget {results.get('budget')} with seed {results.get('seed')}; "
                        f"choose another --out_dir for budget {budget} with seed {seed}")
    return results


def save_results(out_dir: Path, results: dict) -> None:
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_bytes(out_dir / "results.md", markdown(results).encode())


COLUMNS = ["variant", "params", "steps", "train min", "ratio h1", "ratio h10", "ratio h50", "PSNR h1", "SSIM h1", "gap h1", "gap h10"]


def table_row(name: str, row: dict) -> list[str]:
    if "error" in row:
        return [name, "failed: " + row["error"].replace("|", "\\|"), *[""] * (len(COLUMNS) - 2)]
    ratio, gap = row["mse_ratio_to_copy"], row["action_gap"]
    return [name, f"{row['params_m']:.2f}M", f"{row['steps']:,}", f"{row['train_minutes']:.1f}",
            *(f"{ratio[k]:.3f}" if k in ratio else "-" for k in ("1", "10", "50")),
            f"{row['psnr_h1']:.1f}", f"{row['ssim_h1']:.3f}", *(f"{gap[k]:.3f}" if k in gap else "-" for k in ("1", "10"))]


def markdown(results: dict) -> str:
    """One table per game, variants in VARIANTS order (names no longer in VARIANTS last), and the copy-last MSE."""
    parts = []
    for game, entry in results["games"].items():
        budget, test = entry["budget"], entry["test"]
        rows = entry["variants"]
        names = [n for n in VARIANTS if n in rows] + [n for n in rows if n not in VARIANTS]
        lines = [f"| {' | '.join(COLUMNS)} |", "| --- |" + " ---: |" * (len(COLUMNS) - 1)]
        lines += [f"| {' | '.join(table_row(n, rows[n]))} |" for n in names]
        copy = ", ".join(f"h={k} {v:.3g}" for k, v in (entry["copy_last_mse"] or {}).items())
        parts.append(
            f"### {game}\n\nBudget {results['budget']}: {budget['minutes']:g} min per variant (max {budget['max_steps']:,} steps), "
            f"{budget['dataset_steps']:,}-step dataset (seed {results['seed']}); {test['windows']} test windows of {test['horizon']} "
            f"steps from {plural(test['episodes'], 'fresh episode')} (seed {test['seed']}).\n\n" + "\n".join(lines)
            + f"\n\nCopy-last MSE on the same windows: {copy or '-'}\n"
        )
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/bench_quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", required=True, choices=list(BUDGETS), help="games, dataset size, minutes and test set")
    p.add_argument("--games", default=None, help="comma list (default: the budget's)")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)} (default all)")
    p.add_argument("--minutes", type=float, default=None, help="training minutes per variant (default: the budget's)")
    p.add_argument("--out_dir", default=str(ROOT / "runs" / "bench_quality"), help="datasets, runs and results (default runs/bench_quality)")
    p.add_argument("--seed", type=int, default=0, help="seed of the datasets; the test episodes use seed + 1000 (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    args = p.parse_args(argv)
    budget = BUDGETS[args.budget]
    games = [resolve_game(g) for g in (args.games.split(",") if args.games else budget.games)]
    variants = pick(args.variants, list(VARIANTS), "variant")
    minutes = budget.minutes if args.minutes is None else args.minutes
    if minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {minutes}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    out_dir = Path(args.out_dir).resolve()
    results = load_results(out_dir / "results.json", args.budget, args.seed)
    configs = {(g, v): variant_config(budget, v, out_dir / "data" / g, out_dir, minutes, device) for g in games for v in variants}
    out_dir.mkdir(parents=True, exist_ok=True)

    for game in games:
        make_dataset(game, out_dir / "data" / game, budget, args.seed)
    failed = 0
    for game in games:
        windows, test_info = held_out_windows(out_dir / "data" / game, budget, args.seed + EVAL_SEED_OFFSET)
        for i, variant in enumerate(variants, 1):
            print(f"[{game} {i}/{len(variants)}] {variant}: {VARIANTS[variant][0]}; training for {minutes:g} min on {device}", flush=True)
            try:
                row, copy_last = run_variant(configs[game, variant], windows, test_info, device)
            except UserError as e:  # e.g. a diverged loss: the other variants still run
                row, copy_last, failed = {"error": str(e)}, None, failed + 1
                print(f"[{game}] {variant} failed: {e}", flush=True)
            old = results["games"].get(game, {})
            entry = results["games"][game] = {
                "budget": {"dataset_steps": budget.dataset_steps, "minutes": minutes, "max_steps": budget.max_steps},
                "test": {k: v for k, v in test_info.items() if k != "env"},
                "copy_last_mse": copy_last or old.get("copy_last_mse"),  # the same for every variant: the same windows
                "variants": old.get("variants", {}),
            }
            entry["variants"][variant] = {"description": VARIANTS[variant][0], "overrides": VARIANTS[variant][1], **row,
                                          "minutes_budget": minutes, "device": str(device), "finished": datetime.now().isoformat(timespec="seconds")}
            save_results(out_dir, results)
            if "error" not in row:
                ratios = ", ".join(f"h={k} {v:.3f}" for k, v in row["mse_ratio_to_copy"].items())
                print(f"[{game}] {variant}: {row['steps']:,} steps in {row['train_minutes']:.1f} min; MSE / copy-last {ratios}; "
                      f"saved to {out_dir / 'results.json'}", flush=True)
    print(f"\n{markdown(results)}\nresults: {out_dir / 'results.json'}, {out_dir / 'results.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
