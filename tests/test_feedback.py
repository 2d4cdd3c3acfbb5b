"""Feedback (model.feedback): what re-enters the context is a real frame's grey level (uint8) or a level of the
game's palette (palette), in every rollout; and context corruption."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from src.dataset.offline_dataset import Batch
from src.models.rollout import Feedback, rollout, unroll
from src.models.run import TrainedOn
from src.models.world_model import ModelConfig, build_model
from src.playing.dream import Dream


class Recording(nn.Module):
    """Test-only: returns a fixed off-grid frame and keeps every context it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.contexts: list[Tensor] = []

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        self.contexts.append(frames.detach().clone())
        return self.scale * torch.full_like(frames[:, -1:], 100.3 / 255)  # between grey levels 100 and 101


def on_grid(x: Tensor) -> bool:
    return torch.equal((x * 255).round() / 255, x)


def test_uint8_feedback_gives_exactly_the_256_levels() -> None:
    x = torch.linspace(-0.5, 1.5, 100_001)
    levels = torch.unique(Feedback("uint8")(x))
    assert len(levels) == 256 and levels[0] == 0 and levels[-1] == 1 and on_grid(levels)
    assert torch.equal(Feedback("float")(x), x.clamp(0, 1))  # float: clamped only


def test_the_rounding_passes_the_gradient_straight_through() -> None:
    x = torch.rand(5, requires_grad=True)
    (Feedback("uint8")(x) * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0))


def test_rollouts_feed_back_and_score_the_rounded_frames() -> None:
    """Catches a path (evaluation, training unroll) that feeds the model its raw output instead of a grey level."""
    model, context = Recording(), torch.rand(2, 4, 84, 84).mul(255).round().div(255)
    scored = rollout(model, context, torch.zeros(2, 3, dtype=torch.long), Feedback("uint8"))
    assert on_grid(scored) and torch.allclose(scored, torch.full_like(scored, 100 / 255))
    assert all(on_grid(c) for c in model.contexts) and torch.equal(model.contexts[1][:, -1], scored[:, 0])

    model.contexts.clear()
    predicted = unroll(
        model, context, torch.zeros(2, 2, dtype=torch.long), Feedback("uint8")
    )  # training: gradients kept
    assert on_grid(model.contexts[1]) and not on_grid(predicted)  # the loss sees the raw prediction
    predicted.sum().backward()
    assert model.scale.grad is not None and model.scale.grad != 0

    model.contexts.clear()
    rollout(model, context, torch.zeros(2, 2, dtype=torch.long), Feedback("float"))
    assert not on_grid(model.contexts[1])  # float feedback is there for comparison


def test_play_feeds_back_grey_levels(small_dataset: Path) -> None:
    from src.dataset.shards import ShardedDataset

    dataset = ShardedDataset(small_dataset)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), dataset.num_actions)
    nn.init.normal_(model.head.conv.weight, std=0.1)  # a model that changes the frame
    info = TrainedOn("Pong", dataset.num_actions, dataset.manifest.action_meanings, dataset.manifest.env.to_dict())
    dream = Dream(model.eval(), info, torch.device("cpu"), seed=0, dataset=dataset, feedback=Feedback("uint8"))
    for _ in range(3):
        dream.step(0)
    assert on_grid(dream.context)


# ------------------------------------------------------------------------------------------ palette feedback

PALETTE = (0, 87, 92, 236)


def test_palette_feedback_gives_the_nearest_palette_level() -> None:
    x = torch.linspace(-0.5, 1.5, 100_001, requires_grad=True)
    fed = Feedback("palette", PALETTE)(x)
    assert torch.equal(torch.unique(fed * 255).round(), torch.tensor(PALETTE, dtype=torch.float))
    levels = torch.tensor(PALETTE) / 255
    nearest = levels[(x.detach().clamp(0, 1).unsqueeze(1) - levels).abs().argmin(1)]
    assert torch.allclose(fed, nearest)
    assert Feedback("palette", PALETTE)(torch.tensor([89.4 / 255, 89.6 / 255])).mul(255).round().tolist() == [87, 92]
    (fed * 2).sum().backward()
    assert torch.equal(x.grad[(x > 0) & (x < 1)], torch.full_like(x.grad[(x > 0) & (x < 1)], 2.0))  # straight through


def test_rollouts_and_play_feed_back_palette_levels(small_dataset: Path) -> None:
    """Catches a rollout path that ignores the palette (e.g. rounds to any grey level instead)."""
    from src.dataset.shards import ShardedDataset

    model, context = Recording(), torch.rand(2, 4, 84, 84).mul(255).round().div(255)
    scored = rollout(model, context, torch.zeros(2, 3, dtype=torch.long), Feedback("palette", PALETTE))
    assert torch.allclose(scored, torch.full_like(scored, 92 / 255))  # 100.3 is nearest to 92 of the palette
    assert torch.equal(model.contexts[1][:, -1], scored[:, 0])

    dataset = ShardedDataset(small_dataset)
    # No event head: an untrained one may end the dream, whose new start is a real (off-palette) frame.
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, events=False), dataset.num_actions)
    nn.init.normal_(model.head.conv.weight, std=0.1)
    info = TrainedOn("Pong", dataset.num_actions, dataset.manifest.action_meanings, dataset.manifest.env.to_dict())
    dream = Dream(
        model.eval(), info, torch.device("cpu"), seed=0, dataset=dataset, feedback=Feedback("palette", PALETTE)
    )
    for _ in range(4):
        dream.step(0)
    assert set(torch.unique(dream.context.mul(255).round()).tolist()) <= set(PALETTE)


def test_the_palette_is_the_commonest_levels_of_the_training_frames(small_dataset: Path) -> None:
    import numpy as np

    from src.dataset.shards import ShardedDataset
    from src.training.data import frame_palette

    dataset = ShardedDataset(small_dataset)
    rows = np.arange(0, min(len(dataset), 1200), 2)  # fewer than PALETTE_SAMPLES: every row counts
    frames = np.stack([dataset.steps(int(r)).next_obs[0, -1] for r in rows])
    counts = np.bincount(frames.ravel(), minlength=256)
    palette, coverage = frame_palette(dataset, rows, 5)
    assert palette == sorted(np.argsort(-counts, kind="stable")[:5].tolist())
    assert coverage == counts[palette].sum() / counts.sum()


# ------------------------------------------------------------------------------------------ context corruption


def test_the_noise_level_reaches_the_model_and_zero_is_the_test_time_path() -> None:
    """Catches a level that never conditions the model, or a test-time path that is not level 0."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, context_noise=0.05), num_actions=6)
    nn.init.normal_(model.head.conv.weight, std=0.1)
    frames, actions = torch.rand(2, 4, 84, 84), torch.tensor([1, 4])
    with torch.no_grad():
        clean = model(frames, actions)
        assert torch.equal(clean, model(frames, actions, torch.zeros(2)))  # None means level 0
        assert not torch.allclose(clean, model(frames, actions, torch.full((2,), 0.05)))  # the level changes the output
    plain = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), num_actions=6)
    assert not any("noise" in name for name in plain.state_dict())  # off: the same weights as before the option


def test_corruption_is_applied_in_training_only() -> None:
    """Catches noise leaking into validation or rollouts, or a training step that does not tell the model its level."""
    from src.dataset.offline_dataset import Batch
    from src.training.objective import Objective

    seen: list[tuple[Tensor, Tensor | None]] = []

    class Spy(nn.Module):
        def forward(
            self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
        ) -> Tensor:
            seen.append((frames.detach().clone(), noise_level))
            return frames[:, -1:] * 1.0

    frames = torch.rand(3, 4, 84, 84).mul(255).round().div(255)
    batch = Batch(frames, torch.zeros(3, 2, dtype=torch.long), torch.rand(3, 2, 84, 84))
    Objective(Feedback("uint8"), context_noise=0.05).unrolled(Spy(), batch, 2)
    (noisy, level), (second, level2) = seen
    assert level is not None and level2 is level and ((0 <= level) & (level <= 0.05)).all()
    assert (
        not torch.equal(noisy, frames) and (noisy - frames).std() < 0.05
    )  # the context is corrupted, within the level
    seen.clear()
    Objective(Feedback("uint8"), context_noise=0.0).unrolled(Spy(), batch, 1)
    assert torch.equal(seen[0][0], frames) and seen[0][1] is None  # off: the clean context, no level
    seen.clear()
    rollout(Spy(), frames, torch.zeros(3, 2, dtype=torch.long), Feedback("uint8"))
    assert torch.equal(seen[0][0], frames) and seen[0][1] is None  # rollouts: clean and level 0


@pytest.mark.slow  # trainings and evaluations
def test_training_fills_in_the_palette_and_evaluation_uses_the_checkpoints(short_run, tmp_path: Path) -> None:
    """Catches a palette that is not saved with the model (evaluation or play would feed back something else)."""
    import pytest

    from src.eval import evaluate_checkpoint
    from src.evaluation.config import EvalConfig
    from src.evaluation.subject import checkpoint_feedback
    from src.models.checkpoint import read_checkpoint
    from src.utils.errors import UserError

    cfg, result = short_run
    state = read_checkpoint(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    saved = state["config"]["model"]
    assert saved["feedback"] == "palette" and len(saved["palette"]) == cfg.model.palette_size == 16
    summary = evaluate_checkpoint(
        EvalConfig(
            Path(result["run_dir"]) / "checkpoints" / "last.pt",
            "Pong",
            episodes=1,
            starts_per_episode=2,
            horizon=3,
            videos=0,
            out_dir=tmp_path,
        )
    )
    assert summary["feedback"] == "palette" and summary["palette"] == saved["palette"]

    old = {
        **state,
        "config": {**state["config"], "model": {k: v for k, v in saved.items() if k not in ("feedback", "palette")}},
    }
    assert checkpoint_feedback(old) == Feedback("uint8")  # saved before feedback existed: uint8, as evaluated since
    with pytest.raises(UserError, match="has no palette"):
        checkpoint_feedback(old, "palette")


# ------------------------------------------------------------------------------------------ pushforward


class TwoSteps(nn.Module):
    """Test-only: the first step (action 0) is scaled by `first`, the second (action 1) by `second`."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Parameter(torch.tensor(0.9)), nn.Parameter(torch.tensor(1.1))

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        scale = torch.where(actions == 0, self.first, self.second).view(-1, 1, 1, 1)
        return frames[:, -1:] * scale


def grad(p: nn.Parameter) -> float:
    return 0.0 if p.grad is None else p.grad.item()


def two_step_batch() -> Batch:
    torch.manual_seed(0)
    frames, targets = torch.rand(4, 4, 84, 84), torch.rand(4, 2, 84, 84)
    return Batch(frames, torch.tensor([[0, 1]] * 4), targets)


def test_pushforward_carries_no_gradient_into_the_earlier_step() -> None:
    """Catches a pushforward that back-propagates through the step that made its context (it would be an unroll)."""
    from src.config import TrainConfig
    from src.training.objective import Objective, PixelLoss, pushed_forward

    model, batch, t = TwoSteps(), two_step_batch(), TrainConfig()
    objective = Objective(Feedback("float"), PixelLoss.of(t))
    pushed = pushed_forward(model, batch, 1, share=1.0, feedback=Feedback("float"))
    assert torch.allclose(pushed.frames[:, -1], (batch.frames[:, -1] * 0.9).clamp(0, 1))  # the model's own step 1
    assert torch.equal(pushed.frames[:, :3], batch.frames[:, 1:]) and torch.equal(pushed.targets, batch.targets[:, 1:])
    loss, _, _ = objective.unrolled(model, pushed, 1)
    loss.backward()
    assert grad(model.first) == 0 and grad(model.second) != 0  # only the trained step learns

    model = TwoSteps()  # the back-propagated unroll, for contrast: the first step gets a gradient
    loss, _, _ = objective.unrolled(model, batch, 2)
    loss.backward()
    assert grad(model.first) != 0


def test_pushforward_share_picks_samples_and_the_rest_get_true_frames() -> None:
    from src.config import TrainConfig
    from src.training.objective import pushed_forward
    from src.training.schedule import pushforward_share

    batch = two_step_batch()
    none = pushed_forward(TwoSteps(), batch, 1, share=1e-9, feedback=Feedback("float"))
    assert torch.equal(none.frames, torch.cat([batch.frames[:, 1:], batch.targets[:, :1]], dim=1))  # true, one step on
    torch.manual_seed(1)
    expected = (torch.rand(4) < 0.5).tolist()
    torch.manual_seed(1)
    some = pushed_forward(TwoSteps(), batch, 1, share=0.5, feedback=Feedback("float"))
    imagined = [not torch.equal(some.frames[i, -1], batch.targets[i, 0]) for i in range(4)]
    assert imagined == expected and 0 < sum(imagined) < 4, expected

    torch.manual_seed(1)
    static = pushed_forward(
        TwoSteps(), batch, 1, share=0.5, feedback=Feedback("float"), static=True
    )  # as compiled, on a GPU
    assert torch.allclose(static.frames, some.frames) and torch.equal(static.targets, some.targets)

    t = TrainConfig(pushforward=0.6, pushforward_start=0.5)
    assert [pushforward_share(u, t) for u in (0.0, 0.49, 0.5, 0.75, 1.0)] == [
        0.0,
        0.0,
        0.0,
        pytest.approx(0.3),
        pytest.approx(0.6),
    ]
    assert pushforward_share(1.0, TrainConfig()) == 0.0  # off by default


def trained_and_evaluated(small_dataset: Path, tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    """A tiny model trained 4 steps with these overrides, then evaluated on 2 windows of 3 steps. Returns (its
    checkpoint as read back, the evaluation's summary); both must be sound."""
    from src.eval import evaluate_checkpoint
    from src.evaluation.config import EvalConfig
    from src.models.checkpoint import read_checkpoint
    from src.training.loop import train
    from tests.conftest import tiny_config

    cfg = tiny_config(small_dataset, tmp_path, *overrides, "train.max_steps=4", "train.val_every_steps=4")
    result = train(cfg)
    assert math.isfinite(result["val/mse"]) and result["step"] == 4
    checkpoint = Path(result["run_dir"]) / "checkpoints" / "last.pt"
    summary = evaluate_checkpoint(
        EvalConfig(checkpoint, "Pong", episodes=1, starts_per_episode=2, horizon=3, videos=0, out_dir=tmp_path)
    )
    assert all(math.isfinite(v) for v in summary["mse_ratio_to_copy"].values())
    return read_checkpoint(checkpoint), summary


@pytest.mark.slow  # a training and an evaluation
def test_palette_output_trains_saves_and_evaluates(small_dataset: Path, tmp_path: Path) -> None:
    """Catches a palette-output model that the training loop, the checkpoint or evaluation cannot handle."""
    checkpoint, summary = trained_and_evaluated(
        small_dataset,
        tmp_path,
        "model.output=palette",
        "train.log_every=2",
        "train.pushforward=0.5",
        "train.pushforward_start=0.25",
    )
    assert summary["palette"] == checkpoint["config"]["model"]["palette"]


@pytest.mark.slow  # a training and an evaluation
def test_warp_output_trains_its_flow_saves_and_evaluates(small_dataset: Path, tmp_path: Path) -> None:
    """Catches a warp-output model whose flow the training step never reaches (its weights would stay at zero), or
    that the checkpoint or evaluation cannot handle."""
    checkpoint, _ = trained_and_evaluated(small_dataset, tmp_path, "model.output=warp", "train.log_every=2")
    head = checkpoint["model"]["head.conv.weight"]  # (4 changes + 2 flows, C, 3, 3), zero at first
    assert head[4:].abs().sum() > 0
