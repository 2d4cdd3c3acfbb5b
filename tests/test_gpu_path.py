"""The GPU path's mechanisms, exercised on the CPU where they can be: a resume across memory layouts with fused AdamW,
the suite kept off CUDA, the clock's collectives under torchrun, one compiled graph per shape, bf16 only where it is
native, and no non-finite step reaching the weights without a per-step sync."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from torch._dynamo.testing import CompileCounter

from src.config import PROFILES, Config, ConfigError, ModelConfig, config_from_dict, load_config, to_dict
from src.dataset.offline_dataset import Batch
from src.models.checkpoint import read_checkpoint
from src.models.world_model import build_model
from src.training import loop
from src.training.fast_path import FastPath, FiniteGuard, configure_backends
from src.training.objective import Objective, PixelLoss
from src.training.optimizer import make_optimizer, match_layouts
from src.training.resume import flatten
from src.training.schedule import CLOCK_EVERY, Stage
from src.training.step import train_step
from src.utils.device import choose_device
from src.utils.errors import UserError
from tests.conftest import GPU_RUN, ROOT, tiny_config

CPU = torch.device("cpu")


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, events=False), 6)
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # away from copy-last: real gradients everywhere
    return model


def batch_of(seed: int, nan: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(4, 4, 84, 84, generator=g)
    if nan:
        frames[0, 0, 0, 0] = float("nan")
    return Batch(frames, torch.randint(0, 6, (4, 1), generator=g), torch.rand(4, 1, 84, 84, generator=g))


# ------------------------------------------------------------------------------------------ 1: resume across layouts


def adam_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seeds: range) -> None:
    """Optimizer steps on fixed gradients (the same values in whatever layout a weight has): what differs between two
    runs is then the optimizer's own arithmetic alone."""
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g))
        optimizer.step()


def resumed_weights(saved_channels_last: bool, resumed_channels_last: bool, relayout: bool) -> dict[str, torch.Tensor]:
    """Two fused-AdamW steps in one layout, the optimizer saved, two more in the other layout after a resume."""
    model = tiny_model()
    if saved_channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, Config(), CPU, fused=True)
    adam_steps(model, optimizer, range(2))
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    resumed = tiny_model(seed=9)
    if resumed_channels_last:
        resumed.to(memory_format=torch.channels_last)
    resumed.load_state_dict(saved["model"])
    optimizer = make_optimizer(resumed, Config(), CPU, fused=True)
    optimizer.load_state_dict(saved["optimizer"])
    if relayout:
        match_layouts(optimizer)
    adam_steps(resumed, optimizer, range(2, 4))
    return {k: v.contiguous() for k, v in resumed.state_dict().items()}


@pytest.mark.parametrize("saved, resumed", [(False, True), (True, False)])
def test_a_resume_across_memory_layouts_steps_as_an_uninterrupted_run(saved: bool, resumed: bool) -> None:
    """A CPU checkpoint (contiguous moments) resumed with channels-last weights, as on CUDA, and the reverse: fused Adam
    pairs weights and moments by memory position, so the moments must take the weights' strides."""
    reference = resumed_weights(saved, saved, relayout=False)  # no change of layout: what the run would have done
    got = resumed_weights(saved, resumed, relayout=True)
    assert all(torch.equal(got[k], v) for k, v in reference.items())
    broken = resumed_weights(saved, resumed, relayout=False)  # the mechanism: without match_layouts the update is wrong
    assert max((broken[k] - v).abs().max().item() for k, v in reference.items()) > 1e-4  # lr 1e-3: a step's size


def test_match_layouts_lays_moments_out_like_their_weights() -> None:
    model = tiny_model()
    optimizer = make_optimizer(model, Config(), CPU, fused=True)
    adam_steps(model, optimizer, range(1))
    model.to(memory_format=torch.channels_last)
    match_layouts(optimizer)
    one_by_one = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] == 1]
    assert one_by_one and all(p.is_contiguous() for p in one_by_one)  # "contiguous" in both layouts, other strides
    for p in model.parameters():
        for value in optimizer.state[p].values():
            assert value.shape != p.shape or value.stride() == p.stride()


# ------------------------------------------------------------------------------------------ 2: the suite's device


@pytest.mark.slow  # starts a Python process
def test_the_suite_and_its_commands_compute_on_the_cpu() -> None:
    """On a machine with a GPU the suite must not train on it (its tolerances are fp32's on the CPU): CUDA is hidden
    from it and from every command it starts, unless make test-gpu runs the tests marked gpu."""
    if GPU_RUN:
        pytest.skip("make test-gpu leaves the GPUs visible")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and choose_device() == CPU and not torch.cuda.is_available()
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert child.stdout.strip() == "0", child.stderr


# ------------------------------------------------------------------------------------------ 3: the clock under torchrun


def count_collectives(rank: int, store: str, cfg: Config, out: Path) -> None:
    """One of 2 gloo processes training `cfg`, with every Python-side collective counted (DDP's gradient all-reduce
    runs in C++, once per step as it must)."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    if cfg.train.compile:  # dynamo's tracing without inductor's code generation: the graphs, quickly
        compile_ = torch.compile
        torch.compile = lambda model, **k: compile_(model, backend="aot_eager", **k)
    calls: list[str] = []
    for name in ("all_reduce", "broadcast", "broadcast_object_list", "all_gather", "all_gather_object", "barrier"):
        original = getattr(dist, name)
        setattr(
            dist, name, lambda *a, _o=original, _n=name, **k: (calls.append(f"{_n}:{k.get('op', '')}"), _o(*a, **k))[1]
        )
    loop.train(cfg)
    (out / f"rank{rank}.txt").write_text("\n".join(calls))


@pytest.mark.slow
def test_the_clock_is_agreed_every_few_steps_not_every_step(small_dataset: Path, tmp_path: Path) -> None:
    """With train.max_minutes under torchrun the processes must step on one clock; they agree on it with one all-reduce
    every CLOCK_EVERY steps, not with a pickled broadcast at every step."""
    n = 2 * CLOCK_EVERY
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.batch_size=4",
        "train.event_batch_size=4",
        f"train.max_steps={n}",
        "train.max_minutes=60",
        f"train.log_every={n}",
        f"train.val_every_steps={n}",
        "train.val_rollout_enabled=false",
    )
    mp.spawn(count_collectives, args=(str(tmp_path / "store"), cfg, tmp_path), nprocs=2)
    for rank in range(2):
        calls = (tmp_path / f"rank{rank}.txt").read_text().split()
        clock = [c for c in calls if c == f"all_reduce:{dist.ReduceOp.MAX}"]
        assert len(clock) == n // CLOCK_EVERY, calls
        assert len(calls) <= 8, calls  # the clock, the run folder, one log row and one validation's sums: not per step


# ------------------------------------------------------------------------------------------ 4: torch.compile


@pytest.mark.slow
def test_compiled_training_under_torchrun_with_the_event_head(small_dataset: Path, tmp_path: Path) -> None:
    """2 processes, a compiled model (traced ahead of the clock) and the event head: DDP wants a gradient for every
    parameter at every backward, compile_ahead's included, or the next step fails."""
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "train.batch_size=4",
        "train.event_batch_size=4",
        "train.max_steps=3",
        "train.compile=true",
        "train.log_every=3",
        "train.val_every_steps=3",
        "train.val_rollout_enabled=false",
    )
    assert cfg.model.events
    mp.spawn(count_collectives, args=(str(tmp_path / "store"), cfg, tmp_path), nprocs=2)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 3


@pytest.mark.slow
def test_every_graph_is_compiled_before_the_clock_starts(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A curriculum 1 -> 3 with pushforward: the graphs (one step, a step on a fed-back context, the no-gradient
    pushforward pass) are all traced by compile_ahead; the stage switch and the pushforward's start add none, and
    static shapes are asked for (dynamic=False)."""
    counter, asked, at_start = CompileCounter(), [], []
    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **k: (asked.append(k), compile_(model, backend=counter, **k))[1]
    )
    ahead = loop.compile_ahead
    monkeypatch.setattr(loop, "compile_ahead", lambda *a: (ahead(*a), at_start.append(counter.frame_count)))
    loop.train(
        tiny_config(
            small_dataset,
            tmp_path,
            "train.compile=true",
            "train.max_steps=8",
            "train.log_every=4",
            "train.val_every_steps=8",
            "train.val_rollout_enabled=false",
            "train.rollout_steps=[1,3]",
            "train.rollout_stage_ends=[0.5]",
            "train.pushforward=0.5",
            "train.pushforward_start=0.25",
        )
    )
    assert asked == [{"dynamic": False}]
    assert at_start == [3] and counter.frame_count == 3


def test_an_unroll_keeps_the_contexts_memory_layout() -> None:
    """A fed-back frame enters a channels-last context as channels-last: the compiled model sees one stride pattern."""
    from src.models.rollout import unroll

    seen = []

    def model(
        frames: torch.Tensor, action: torch.Tensor, noise_level: None = None, logits: bool = False
    ) -> torch.Tensor:
        seen.append(frames.stride())
        return frames[:, -1:] * 0.5

    context = torch.rand(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    unroll(model, context, torch.zeros(2, 3, dtype=torch.long))
    assert len(set(seen)) == 1 and seen[0] == context.stride()


# ------------------------------------------------------------------------------------------ 5: backends and bf16


def test_bf16_only_where_the_gpu_has_it(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )  # a Turing GPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert FastPath.choose(tiny_config(small_dataset, tmp_path), torch.device("cuda")).autocast is None  # auto: fp32
    with pytest.raises(
        ConfigError, match=r"train.precision=bf16: Tesla T4 has no native bf16 .*use train.precision=fp32 or auto"
    ):
        FastPath.choose(tiny_config(small_dataset, tmp_path, "train.precision=bf16"), torch.device("cuda"))


def test_cuda_runs_autotune_convolutions_and_allow_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    before = torch.get_float32_matmul_precision()
    try:
        configure_backends(FastPath(CPU, None, False, False, False))
        assert (
            not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == before
        )  # the CPU: untouched
        configure_backends(FastPath(torch.device("cuda"), torch.bfloat16, True, True, True, True))
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# ------------------------------------------------------------------------------------------ 6: non-finite steps


def plain(fast: FastPath) -> Objective:
    """The objective of one-step training under the default config's loss, on `fast`."""
    t = Config().train
    return Objective(pixels=PixelLoss.of(t), fast=fast, grad_clip=t.grad_clip)


def test_a_deferred_check_keeps_a_non_finite_step_from_the_weights() -> None:
    """Fused Adam with the check on the device (as on CUDA, where the loop reads values only at its logging steps):
    step 3 is NaN, step 4 finite; both leave the weights, the moments and the step counts as step 2 left them, and the
    check names step 3."""
    fast = FastPath(CPU, None, False, False, False, fused=True)
    model = tiny_model()
    optimizer = make_optimizer(model, Config(), CPU, fused=fast.fused)
    guard = FiniteGuard(deferred=True, device=CPU)
    for step in (1, 2, 3, 4):
        metrics, _, _ = train_step(model, optimizer, plain(fast), batch_of(step, nan=step == 3), Stage(1))
        guard.before_step(optimizer, metrics["finite"], step)
        optimizer.step()
        if step == 2:
            weights, moments = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()["state"])
        if step == 3:
            assert not metrics["finite"] and not torch.isfinite(metrics["loss"])
    assert guard.first_bad() == 3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    state = optimizer.state_dict()["state"]
    assert all(torch.equal(state[i][key], moments[i][key]) for i in moments for key in moments[i])


def test_a_finite_run_is_never_held_back() -> None:
    fast = FastPath(CPU, None, False, False, False, fused=True)
    model = tiny_model()
    optimizer = make_optimizer(model, Config(), CPU, fused=True)
    guard = FiniteGuard(deferred=True, device=CPU)
    before = copy.deepcopy(model.state_dict())
    metrics, _, _ = train_step(model, optimizer, plain(fast), batch_of(1), Stage(1))
    guard.before_step(optimizer, metrics["finite"], 1)
    optimizer.step()
    assert guard.first_bad() is None and not all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_run_that_goes_non_finite_stops_with_its_last_checkpoint_weights(
    small_dataset: Path, tmp_path: Path, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole loop with the device-side check (fused Adam, as CUDA chooses; on the CPU forced): a NaN at step 3,
    found at step 4 (a logging step): the run stops naming step 3, and the model holds step 2's weights, which its
    last.pt saved. On CUDA with every default of the GPU path (bf16, channels-last, torch.compile)."""
    if device == "cpu":
        choose = FastPath.choose
        monkeypatch.setattr(
            FastPath,
            "choose",
            classmethod(
                lambda cls, cfg, device: choose(cfg, device).__class__(
                    **{**choose(cfg, device).__dict__, "fused": True}
                )
            ),
        )
    calls, models = [], []
    real_step = loop.train_step

    def poisoned(forward, optimizer, objective, batch, *args):
        if batch.frames.any():  # compile_ahead's batches are zeros
            calls.append(1)
            models.append(forward)
        if len(calls) == 3:
            batch = Batch(batch.frames * float("nan"), batch.actions, batch.targets, batch.rewards, batch.dones)
        return real_step(forward, optimizer, objective, batch, *args)

    monkeypatch.setattr(loop, "train_step", poisoned)
    cfg = tiny_config(
        small_dataset,
        tmp_path,
        "profile=cpu",
        f"train.cpu={device == 'cpu'}",
        "train.max_steps=8",
        "train.log_every=4",
        "train.val_every_steps=2",
        "train.val_rollout_enabled=false",
    )
    with pytest.raises(
        UserError,
        match=r"training diverged at step 3 \(the weights were left as they were before it; found at step 4\)",
    ):
        loop.train(cfg)
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = getattr(models[-1], "_orig_mod", models[-1])  # the compiled wrapper's model
    assert saved["step"] == 2 and all(torch.equal(model.state_dict()[k].cpu(), v) for k, v in saved["model"].items())


@pytest.mark.gpu
@pytest.mark.slow
def test_a_cpu_checkpoint_resumes_on_cuda_with_the_gpu_path(small_dataset: Path, tmp_path: Path) -> None:
    """A run saved by the CPU (contiguous weights and moments) goes on on CUDA with fused AdamW, channels-last weights,
    bf16 and torch.compile: the moments are laid out anew, and the run trains on to finite losses."""
    first = loop.train(
        tiny_config(
            small_dataset,
            tmp_path,
            "profile=cpu",
            "train.cpu=true",
            "train.max_steps=4",
            "train.log_every=2",
            "train.val_every_steps=4",
            "train.val_rollout_enabled=false",
        )
    )
    result = loop.train(
        tiny_config(
            small_dataset,
            tmp_path,
            "profile=cpu",
            f"train.resume={first['run_dir']}",
            "train.max_steps=8",
            "train.log_every=2",
            "train.val_every_steps=4",
            "train.val_rollout_enabled=false",
        )
    )
    assert result["step"] == 8 and torch.isfinite(torch.tensor(result["val/mse"]))


def test_a_training_step_builds_no_tensor_from_host_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, a tensor built from host data (torch.tensor) waits for all queued work: a hidden sync. After the first
    step, a step with the event head, palette feedback, a 2-step unroll and a palette output builds none (the
    constants are made once per device: src.utils.device.constant)."""
    from src.models.events import EventHead
    from src.models.rollout import Feedback
    from src.training.objective import EventLoss, EventWeights

    palette = (0, 87, 144, 236)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(channels=[8, 16], action_embed_dim=8, events=True, output="palette", palette=list(palette)), 6
    )
    assert isinstance(model.events, EventHead)
    optimizer = make_optimizer(model, Config(), CPU)
    fast = FastPath(CPU, None, False, False, False)
    events = EventLoss(model.events, EventWeights((3.0, 1.0, 3.0), 5.0))
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        torch.rand(4, 4, 84, 84, generator=g),
        torch.randint(0, 6, (4, 2), generator=g),
        torch.rand(4, 2, 84, 84, generator=g),
        torch.zeros(4, 2),
        torch.zeros(4, 2, dtype=torch.bool),
    )

    def step() -> None:
        objective = Objective(
            Feedback("palette", palette), PixelLoss.of(Config().train), palette=palette, events=events, fast=fast
        )
        event_batch = Batch(
            batch.frames, batch.actions[:, :1], batch.targets[:, :1], batch.rewards[:, :1], batch.dones[:, :1]
        )
        train_step(model, optimizer, objective, batch, Stage(2), event_batch)
        optimizer.step()

    step()  # the first makes the constants
    built = []
    tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: (built.append(a), tensor(*a, **k))[1])
    step()
    assert built == []


# ------------------------------------------------------------------------------------------ 7: the GPU profile


def test_the_gpu_profile_is_one_override_or_auto_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """profile=gpu sets its keys over config.yaml, the command line's keys win over it, auto picks it where CUDA is (and
    train.cpu is false), and a resumed run's config is not changed by it again."""
    config = ROOT / "config.yaml"
    plain, gpu = load_config(config), load_config(config, ["profile=gpu", "train.val_every_steps=100"])
    assert plain.profile == "cpu" and (plain.train.batch_size, plain.data.num_workers) == (32, 0)  # no CUDA here
    assert gpu.profile == "gpu" and (
        gpu.train.batch_size,
        gpu.optimizer.lr,
        gpu.data.num_workers,
        gpu.train.val_every_steps,
    ) == (256, 6e-4, 6, 100)
    profile, got = flatten(OmegaConf.to_container(OmegaConf.from_dotlist(list(PROFILES["gpu"])))), flatten(to_dict(gpu))
    assert {k: got[k] for k in profile} == {**profile, "train.val_every_steps": 100}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_config(config).profile == "gpu" and load_config(config).train.batch_size == 256
    assert load_config(config, ["train.cpu=true"]).profile == "cpu"
    saved = to_dict(load_config(config, ["profile=gpu", "train.batch_size=64"]))
    assert config_from_dict(saved, ["train.max_steps=10"]).train.batch_size == 64  # the profile is not applied twice
    with pytest.raises(ConfigError, match="^profile must be auto, cpu or gpu, got 'tpu'$"):
        load_config(config, ["profile=tpu"])
