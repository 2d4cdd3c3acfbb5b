"""Training throughput: the model's ceiling, the real data path, the loader alone, and evaluation rollouts.

    python benchmarks/bench_train.py [--steps 20] [--rounds 3] [--batch_sizes 32] [--workers 0,1,2]
                                     [--device cpu] [--data_dir DIR] [--peak_tflops T] [--profile]

Every row trains the model of config.yaml (or rolls it out) with src.train's own step, on a dataset recorded
with fixed settings into <out_dir>/data (10,000 Pong steps; reused when present), and reports samples/s:
  model, synthetic   optimizer steps on one batch already on the device: the model's ceiling (reference);
                     again with the other memory format (train.channels_last) and, on a CPU, with one thread
                     and wrapped in DistributedDataParallel in a process group of one (DDP's own overhead)
  train, loader      the same steps, each batch drawn from the DataLoader over the memory-mapped shards and
                     moved to the device, as src.train does, with data.num_workers = W
  train, on device   the same steps, each batch gathered from the dataset held in the device's memory
                     (data.on_device; skipped with a line when it does not fit)
  loader only        the DataLoader alone with W workers (batches x batch size per second)
  rollout            open-loop evaluation: 64 rollouts of 50 steps under inference_mode, in predicted frames/s
Ratio: samples/s over the synthetic row of the same batch size, measured in the same run. The synthetic and
loader rows alternate over --rounds rounds and each reports its median, so that drift hits both alike.
Every training row also reports (see docs/speed.md):
  TFLOP/s            FLOPs per sample x samples/s; the FLOPs are those of one synthetic step, counted once per
                     batch size by torch's FlopCounterMode (matmuls and convolutions, forward and backward:
                     src.utils.flops.step_flops), and printed as GFLOP/step
  MFU                TFLOP/s over the device's peak for the step's dtype, printed in the header with its source:
                     NVIDIA's datasheet figure for known GPUs, an estimate from /proc/cpuinfo for the CPU, or
                     --peak_tflops (the 1-thread row is measured against the same whole-CPU peak)
  outside GPU        CUDA only: the share of a step's wall time in which the GPU runs no kernel or copy,
                     from torch.profiler over a few steps (CPU overhead, launches, loading, syncs)
--profile prints torch.profiler's table of one training step's most expensive operators.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import Config, load_config  # noqa: E402
from src.dataset.manifest import MANIFEST  # noqa: E402
from src.dataset.offline_dataset import Batch, split_episodes  # noqa: E402
from src.dataset.shards import ShardedDataset  # noqa: E402
from src.models.rollout import rollout  # noqa: E402
from src.models.world_model import build_model  # noqa: E402
from src.training.batches import DeviceBatches, device_arrays_bytes, fits_on_device, train_batches  # noqa: E402
from src.training.data import starts_within  # noqa: E402
from src.training.fast_path import FastPath, configure_backends, prepare_model  # noqa: E402
from src.training.objective import Objective, PixelLoss  # noqa: E402
from src.training.optimizer import make_optimizer  # noqa: E402
from src.training.schedule import Stage  # noqa: E402
from src.training.step import train_step  # noqa: E402
from src.utils.flops import peak_flops, step_flops  # noqa: E402
from src.utils.frames import frames_to_float  # noqa: E402

DATA_STEPS = 10_000


def record(out: Path) -> Path:
    if not (out / MANIFEST).exists() or not ShardedDataset(out, verify="none").manifest.complete:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "src.dataset.generate_dataset",
                *f"--game Pong --steps {DATA_STEPS} --seed 0".split(),
            ]
            + ["--num_envs", "4", "--out_dir", str(out), "--resume"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def rate(step: Callable[[], int], steps: int, warmup: int = 3) -> float:
    """Samples/s of `steps` calls of step() (each returns the samples it handled), after `warmup` calls."""
    for _ in range(warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, samples = time.perf_counter(), 0
    for _ in range(steps):
        samples += step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - start)


def gpu_idle_share(step: Callable[[], object], steps: int = 5) -> float:
    """CUDA only: the share of the wall time of `steps` calls of step() in which the GPU runs nothing, that is
    1 - (the union of its kernels', copies' and memsets' intervals, from torch.profiler) / wall time. Call it warm
    (compiled, cached allocator filled). Only the GPU's activity is recorded, to keep the profiler's own CPU
    overhead out of the steps; what remains of it makes the share an upper bound."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    busy_us, end = 0.0, -math.inf  # overlapping intervals (several streams) count once
    for s, e in sorted(
        (ev.time_range.start, ev.time_range.end)
        for ev in prof.events()  # microseconds
        if ev.activity_type in ("kernel", "gpu_memcpy", "gpu_memset")
    ):
        busy_us, end = busy_us + max(0.0, e - max(s, end)), max(end, e)
    return 1 - busy_us / wall_us


def cell(value: float, spec: str, unit: str = "") -> str:
    """A table cell: `value` formatted, or "-" for nan (not measured, or no peak known)."""
    return "-" if math.isnan(value) else f"{value:{spec}}{unit}"


def trainer(
    cfg: Config, dataset: ShardedDataset, device: torch.device, ddp: bool = False
) -> tuple[torch.nn.Module, Callable[[Batch], int]]:
    """A fresh model set up as src.train sets it up (with `ddp`, wrapped in DistributedDataParallel, as under
    torchrun), and a function doing one of src.train's steps on a batch."""
    torch.manual_seed(0)
    fast = FastPath.choose(cfg, device)
    configure_backends(fast)  # cuDNN autotuning and TF32 on CUDA, as src.train sets them
    env = dataset.manifest.env
    model = build_model(cfg.model, dataset.num_actions, env.context_frames, env.screen_size).to(device)
    forward = prepare_model(model, fast, ddp=ddp)
    optimizer = make_optimizer(model, cfg, device, fused=fast.fused)

    objective = Objective(pixels=PixelLoss.of(cfg.train), fast=fast, grad_clip=cfg.train.grad_clip)

    def step(batch: Batch) -> int:
        train_step(forward, optimizer, objective, batch.to(device, non_blocking=True), Stage(1))
        optimizer.step()
        return len(batch)

    return model, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per row and round (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; rows report the median (default 3)")
    p.add_argument("--batch_sizes", default="32", help="comma-separated (default 32, the config's)")
    p.add_argument("--workers", default="0,1,2", help="data.num_workers values to measure (default 0,1,2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--data_dir", default=None, help="a dataset to read instead of recording one")
    p.add_argument("--out_dir", default="runs/bench_train")
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for MFU (default: NVIDIA's figure for known GPUs, an estimate for the CPU)",
    )
    p.add_argument("--profile", action="store_true", help="print the profile of one training step")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.channels_last=false")
    args = p.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = Path(args.data_dir) if args.data_dir else record(Path(args.out_dir) / "data")
    base = load_config(ROOT / "config.yaml", [f"data.dir={data}", *args.overrides])
    dataset = ShardedDataset(data, verify="quick")
    train_rows, _ = split_episodes(dataset.column("episode"), base.data.val_ratio, base.train.seed)
    starts = starts_within(dataset, train_rows, 1)
    workers = [int(w) for w in args.workers.split(",")]
    dtype = FastPath.choose(base, device).autocast or torch.float32
    peak, source = (args.peak_tflops * 1e12, "--peak_tflops") if args.peak_tflops else peak_flops(device, dtype)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU kernels {torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 "
        "lower them), "
        f"dataset {data} ({len(dataset):,} steps), "
        f"model {base.model.name}, {args.rounds} rounds x {args.steps} steps\n"
        f"peak {peak / 1e12:.4g} TFLOP/s {str(dtype).removeprefix('torch.')} ({source})",
        flush=True,
    )

    # (what, batch, workers, samples/s, ratio to synthetic, FLOPs per sample, share of the time outside the GPU)
    rows: list[tuple[str, int, str, float, float, float, float]] = []
    store = Path(tempfile.mkdtemp()) / "store"  # a process group of one, for the DDP row
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", init_method=f"file://{store}", rank=0, world_size=1
    )
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        # torch.compile caches its graphs on the model class's forward code, shared by every instance: without a
        # reset, this batch size's model would find the previous one's graphs, fail their shape guards and recompile
        # next to them (into a dynamic-shape graph, unless compiled with dynamic=False), every graph counting towards
        # dynamo's recompile limit (8, then eager), unlike a run of src.train at this batch size alone. One reset per
        # batch size: its trainers compile lazily, at their first step in the rounds below, so a reset between
        # building them would change nothing (and one between their first steps would throw the first one's away).
        torch._dynamo.reset()
        config = lambda *more: load_config(  # noqa: E731
            ROOT / "config.yaml",
            [
                f"data.dir={data}",
                f"train.batch_size={batch_size}",
                *args.overrides,
                *more,
            ],
        )
        cfg = config()
        fast = FastPath.choose(cfg, device)
        model, step = trainer(cfg, dataset, device)
        fixed = next(train_batches(dataset, starts, 1, cfg, 0))
        fixed = Batch(
            fixed.frames.to(device), fixed.actions.to(device), fixed.targets.to(device)
        )  # on the device: no copy
        # Counted on an eager copy when compiled: FlopCounterMode sees aten ops, the FLOPs are the same.
        counting = trainer(config("train.compile=false"), dataset, device)[1] if fast.compile else step
        flops = step_flops(lambda: counting(fixed)) / batch_size
        print(
            f"batch {batch_size}: {flops * batch_size / 1e9:.3g} GFLOP/step ({flops / 1e9:.3g} GFLOP/sample)",
            flush=True,
        )
        # The ceiling again with the other memory format, and with one thread: the measurements behind the defaults.
        _, flipped = trainer(config(f"train.channels_last={not fast.channels_last}"), dataset, device)
        ceilings = {
            "model, synthetic": step,
            f"model, synthetic, {'contiguous' if fast.channels_last else 'channels-last'}": flipped,
        }
        # The rows train frames only: without the event head's parameters, which DDP would wait for in vain.
        ceilings["model, synthetic, DDP (1 process)"] = trainer(
            config("model.events=false"), dataset, device, ddp=True
        )[1]
        if device.type == "cpu" and torch.get_num_threads() > 1:
            threads = torch.get_num_threads()

            def one_thread(batch: Batch) -> int:
                torch.set_num_threads(1)
                try:
                    return step(batch)
                finally:
                    torch.set_num_threads(threads)

            ceilings["model, synthetic, 1 thread"] = one_thread
        loaders = {
            w: train_batches(
                dataset,
                starts,
                1,
                config(f"data.num_workers={w}", *([f"data.prefetch_factor={4}"] if w else [])),
                0,
                fast.pin_memory,
            )
            for w in workers
        }
        timed: dict[str, Callable[[], int]] = {
            f"{name}|-": partial(run_step, fixed) for name, run_step in ceilings.items()
        }
        for w, batches in loaders.items():
            timed[f"train, loader|{w}"] = lambda batches=batches: step(next(batches))
            timed[f"loader only|{w}"] = lambda batches=batches: len(next(batches))
        if fits_on_device(device_arrays_bytes(dataset), device)[0]:
            held = DeviceBatches(dataset, starts, 1, cfg, 0, device)
            timed["train, on device|-"] = lambda: step(next(held))
        else:
            print(f"the dataset does not fit in {device}'s free memory: no on-device row", flush=True)
        results: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for key, run in timed.items():
                results.setdefault(key, []).append(rate(run, (4 if key.startswith("loader only") else 1) * args.steps))
        training = [key for key in timed if not key.startswith("loader only")]
        outside = {key: gpu_idle_share(timed[key]) for key in training} if device.type == "cuda" else {}
        reference = statistics.median(results["model, synthetic|-"])
        for key, values in results.items():
            name, _, w = key.partition("|")
            rows.append(
                (
                    name,
                    batch_size,
                    w,
                    statistics.median(values),
                    statistics.median(values) / reference,
                    flops if key in training else math.nan,
                    outside.get(key, math.nan),
                )
            )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            batches = loaders[workers[0]]
            with profile(activities=activities) as prof:
                for _ in range(3):
                    step(next(batches))
            print(
                prof.key_averages().table(
                    sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=15
                )
            )

    dist.destroy_process_group()

    # Evaluation: 64 rollouts of 50 steps from real contexts.
    eval_batch, horizon = 64, 50
    window_starts = dataset.window_starts(horizon)[:: max(1, len(dataset) // eval_batch // 4)][:eval_batch]
    windows = [dataset.steps(int(s), horizon) for s in window_starts]
    context = frames_to_float(torch.stack([torch.from_numpy(w.obs[0]) for w in windows]).to(device))
    actions = torch.stack([torch.from_numpy(w.action) for w in windows]).to(device)
    model.eval()
    frames_per_s = rate(lambda: rollout(model, context, actions).shape[0] * horizon, max(1, args.rounds), warmup=1)
    rows.append(("rollout (eval)", eval_batch, "-", frames_per_s, math.nan, math.nan, math.nan))

    print(
        "\n| what | batch | workers | samples/s | ratio to synthetic | TFLOP/s | MFU | outside GPU |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for name, batch_size, w, value, ratio, per_sample, idle in rows:
        unit = " frames/s" if name.startswith("rollout") else ""
        achieved = value * per_sample  # FLOP/s
        print(
            f"| {name} | {batch_size} | {w} | {value:,.1f}{unit} | {cell(ratio, '.2f')} "
            f"| {cell(achieved / 1e12, '.3g')} | "
            f"{cell(100 * achieved / peak, '.3g', '%')} | {cell(100 * idle, '.0f', '%')} |"
        )


if __name__ == "__main__":
    main()
