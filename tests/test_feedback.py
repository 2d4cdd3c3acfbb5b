"""8-bit feedback (model.feedback=uint8): what re-enters the context is a real frame's grey level, in every rollout."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from src.models.rollout import feed_back, rollout, unroll
from src.models.world_model import ModelConfig, build_model
from src.playing.dream import Dream


class Recording(nn.Module):
    """Test-only: returns a fixed off-grid frame and keeps every context it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.contexts: list[Tensor] = []

    def forward(self, frames: Tensor, actions: Tensor) -> Tensor:
        self.contexts.append(frames.detach().clone())
        return self.scale * torch.full_like(frames[:, -1:], 100.3 / 255)  # between grey levels 100 and 101


def on_grid(x: Tensor) -> bool:
    return torch.equal((x * 255).round() / 255, x)


def test_uint8_feedback_gives_exactly_the_256_levels() -> None:
    x = torch.linspace(-0.5, 1.5, 100_001)
    levels = torch.unique(feed_back(x, "uint8"))
    assert len(levels) == 256 and levels[0] == 0 and levels[-1] == 1 and on_grid(levels)
    assert torch.equal(feed_back(x, "float"), x.clamp(0, 1))  # float: clamped only


def test_the_rounding_passes_the_gradient_straight_through() -> None:
    x = torch.rand(5, requires_grad=True)
    (feed_back(x, "uint8") * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0))


def test_rollouts_feed_back_and_score_the_rounded_frames() -> None:
    """Catches a path (evaluation, training unroll) that feeds the model its raw output instead of a grey level."""
    model, context = Recording(), torch.rand(2, 4, 84, 84).mul(255).round().div(255)
    scored = rollout(model, context, torch.zeros(2, 3, dtype=torch.long), "uint8")
    assert on_grid(scored) and torch.allclose(scored, torch.full_like(scored, 100 / 255))
    assert all(on_grid(c) for c in model.contexts) and torch.equal(model.contexts[1][:, -1], scored[:, 0])

    model.contexts.clear()
    predicted = unroll(model, context, torch.zeros(2, 2, dtype=torch.long), "uint8")  # training: gradients kept
    assert on_grid(model.contexts[1]) and not on_grid(predicted)  # the loss sees the raw prediction
    predicted.sum().backward()
    assert model.scale.grad is not None and model.scale.grad != 0

    model.contexts.clear()
    rollout(model, context, torch.zeros(2, 2, dtype=torch.long), "float")
    assert not on_grid(model.contexts[1])  # float feedback is there for comparison


def test_play_feeds_back_grey_levels(small_dataset: Path) -> None:
    from src.dataset.shards import ShardedDataset

    dataset = ShardedDataset(small_dataset)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), dataset.num_actions)
    nn.init.normal_(model.head.conv.weight, std=0.1)  # a model that changes the frame
    info = {"action_meanings": dataset.manifest.action_meanings, "game": "Pong"}
    dream = Dream(model.eval(), info, torch.device("cpu"), seed=0, dataset=dataset, feedback="uint8")
    for _ in range(3):
        dream.step(0)
    assert on_grid(dream.context)


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
    from src.config import TrainConfig
    from src.dataset.offline_dataset import Batch
    from src.training.step import unrolled_loss

    seen: list[tuple[Tensor, Tensor | None]] = []

    class Spy(nn.Module):
        def forward(self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None) -> Tensor:
            seen.append((frames.detach().clone(), noise_level))
            return frames[:, -1:] * 1.0

    frames = torch.rand(3, 4, 84, 84).mul(255).round().div(255)
    batch = Batch(frames, torch.zeros(3, 2, dtype=torch.long), torch.rand(3, 2, 84, 84))
    unrolled_loss(Spy(), batch, 2, TrainConfig(), "uint8", context_noise=0.05)
    (noisy, level), (second, level2) = seen
    assert level is not None and level2 is level and ((0 <= level) & (level <= 0.05)).all()
    assert not torch.equal(noisy, frames) and (noisy - frames).std() < 0.05  # the context is corrupted, within the level
    seen.clear()
    unrolled_loss(Spy(), batch, 1, TrainConfig(), "uint8", context_noise=0.0)
    assert torch.equal(seen[0][0], frames) and seen[0][1] is None  # off: the clean context, no level
    seen.clear()
    rollout(Spy(), frames, torch.zeros(3, 2, dtype=torch.long), "uint8")
    assert torch.equal(seen[0][0], frames) and seen[0][1] is None  # rollouts: clean and level 0
