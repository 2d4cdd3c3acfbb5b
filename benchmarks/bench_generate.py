"""How fast is dataset generation, next to the bare emulator measured in the same run?

    python benchmarks/bench_generate.py [--game Pong] [--steps 50000] [--num_envs 1,2,4,8] [--rss_steps 20000,200000]
                                        [--layouts steps,frames]

Rows:
  bare emulator   one ALE/<Game>-v5 env in this process: frameskip 4, grayscale, no resize or stacking,
                  random actions, nothing written (the reference).
  generator       `python -m src.dataset.generate_dataset` end to end in a subprocess, wall clock from
                  launch to exit (interpreter start-up, workers, writing, checksums and manifest included), for
                  each --layouts: steps (the contract's files) and frames (each frame once, zstd-compressed), one
                  after the other at each setting, so that drift hits both alike.
Peak RSS is the largest sum, over the generator's process tree, of resident memory sampled every 100 ms.
Ratio = generator steps/s / bare emulator steps/s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.envs.atari import resolve_game  # noqa: E402


def bare_emulator(game: str, steps: int, seed: int = 0) -> float:
    """Steps/s of one bare ALE env with random actions."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(f"ALE/{game}-v5", frameskip=4, obs_type="grayscale", repeat_action_probability=0.0)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n = int(env.action_space.n)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(n)))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def generator(game: str, steps: int, num_envs: int | None, work: Path, layout: str) -> tuple[float, int]:
    """(steps/s end to end, peak RSS bytes) of one generation run into a fresh directory."""
    out = work / f"gen_{num_envs}_{steps}_{layout}"
    cmd = [sys.executable, "-m", "src.dataset.generate_dataset", "--game", game, "--steps", str(steps)]
    cmd += ["--out_dir", str(out), "--layout", layout]
    if num_envs is not None:
        cmd += ["--num_envs", str(num_envs)]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"generator failed: {proc.stderr.read().decode()[-2000:]}")
    shutil.rmtree(out)
    return steps / seconds, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="Pong")
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--num_envs", default="1,2,4,8")
    p.add_argument("--rss_steps", default="20000,200000", help="step counts for the peak-RSS rows (default num_envs)")
    p.add_argument("--work_dir", default=None, help="where the generated datasets go (deleted after each run)")
    p.add_argument("--layouts", default="steps,frames", help="dataset layouts to record (default steps,frames)")
    args = p.parse_args()
    game = resolve_game(args.game)
    work = Path(tempfile.mkdtemp(prefix="bench_generate_", dir=args.work_dir))
    try:
        bare = bare_emulator(game, args.steps)
        rows = [("bare emulator (1 env, in process)", args.steps, bare, None)]
        layouts = args.layouts.split(",")
        for n in [int(x) for x in args.num_envs.split(",") if x]:
            for layout in layouts:
                rate, peak = generator(game, args.steps, n, work, layout)
                rows.append((f"generator --num_envs {n}, {layout}", args.steps, rate, peak))
        for steps in [int(x) for x in args.rss_steps.split(",") if x]:
            for layout in layouts:
                rate, peak = generator(game, steps, None, work, layout)
                rows.append((f"generator (default num_envs), {layout}", steps, rate, peak))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{game}, {psutil.cpu_count()} cores\n")
    print(f"| {'configuration':44} | {'steps':>8} | {'steps/s':>8} | {'ratio to bare':>13} | {'peak RSS':>9} |")
    print(f"| {'-' * 44} | {'-' * 8}:| {'-' * 8}:| {'-' * 13}:| {'-' * 9}:|")
    for name, steps, rate, peak in rows:
        rss = f"{peak / 2**20:,.0f} MiB" if peak else "-"
        print(f"| {name:44} | {steps:>8,} | {rate:>8,.0f} | {rate / bare:>12.2f}x | {rss:>9} |")


if __name__ == "__main__":
    main()
