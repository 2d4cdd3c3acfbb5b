"""The training objective's per-pixel loss terms (src/training/objective.py), on frames small enough to check."""

from __future__ import annotations

import pytest
import torch

from src.training.objective import PixelLoss


def test_loss_cutoff_drops_the_pixels_already_about_right() -> None:
    """SimPLe's clipped loss: a pixel off by less than the cutoff costs nothing, one off by more costs the excess; the
    logged MSE stays the plain one."""
    target = torch.zeros(1, 1, 4, 4)
    prediction = target.clone()
    prediction[0, 0, 0, 0] = 0.05  # MSE 0.0025: under the cutoff
    prediction[0, 0, 1, 1] = 0.5  # MSE 0.25: over it
    loss, logged = PixelLoss("mse", cutoff=0.01)(prediction, target)
    assert loss.item() == pytest.approx((0.25 - 0.01) / 16)
    assert logged["mse"].item() == pytest.approx((0.0025 + 0.25) / 16)
    small = target.clone()
    small[0, 0, 2, 2] = 0.05
    assert PixelLoss("mse", cutoff=0.01)(small, target)[0].item() == 0  # no gradient from a near miss
    assert PixelLoss("mse")(small, target)[0].item() == pytest.approx(0.0025 / 16)  # cutoff 0: as before


def test_the_flow_guide_pulls_the_flow_towards_a_ball_beyond_a_bilinear_copys_reach() -> None:
    """model.output=warp: a 1-pixel ball that moved 3 pixels right gives the flow no gradient through the frame's own
    loss (a bilinear copy sees only its neighbours), but the guide's blurred frames do, and in the right direction:
    where the ball is now, the flow is pulled to copy from the left. A flow that does copy from there costs less."""
    from src.models.unet import warp
    from src.training.objective import flow_guide_loss

    before = torch.zeros(1, 1, 84, 84)
    before[0, 0, 40, 30] = 1.0
    after = torch.zeros(1, 1, 84, 84)
    after[0, 0, 40, 33] = 1.0
    flow = torch.zeros(1, 2, 84, 84, requires_grad=True)
    (warp(before, flow) - after).pow(2).mean().backward()
    assert flow.grad[0, 0, 40, 33] == 0  # the frame's loss: nothing to follow
    flow.grad = None
    flow_guide_loss(before, flow, after).backward()
    assert flow.grad[0, 0, 40, 33] > 0  # descent lowers the x flow there: copy from the left, where the ball was
    moved = torch.zeros(1, 2, 84, 84)
    moved[0, 0] = -3.0
    assert flow_guide_loss(before, moved, after) < 1e-3 * flow_guide_loss(before, flow.detach(), after)


def test_change_sparsity_adds_the_drawn_changes_mean_absolute_value() -> None:
    """model.output=warp with train.change_sparsity=s: the loss grows by s times the mean absolute change the head
    draws after its copy (the prediction less the moved last frame), and by nothing else."""
    from src.dataset.offline_dataset import Batch
    from src.models.unet import warp
    from src.models.world_model import ModelConfig, build_model
    from src.training.objective import Objective
    from src.training.schedule import Stage

    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, output="warp", events=False), 4)
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # a head at zero draws no change and moves nothing
    batch = Batch(torch.rand(2, 4, 84, 84), torch.tensor([[0], [3]]), torch.rand(2, 1, 84, 84))
    plain, sparse = Objective(flow_guide=0.1), Objective(flow_guide=0.1, change_sparsity=0.5)
    with torch.no_grad():
        base = plain.loss(model, batch, Stage())[0]
        more = sparse.loss(model, batch, Stage())[0]
        frame, flow = model(batch.frames, batch.actions[:, 0], logits=True)
        drawn = frame - warp(batch.frames[:, -1:], flow)
    assert drawn.abs().mean() > 0
    assert (more - base).item() == pytest.approx(0.5 * drawn.abs().mean().item(), rel=1e-4)


def _train_head_on_noise(calibrate: bool) -> float:
    """A small event head trained as training trains it (the rare classes weighted up, event batches a quarter
    rewards) on inputs that say nothing: rewards of either sign at 2% each, at random. Returns its mean p(+1) on new
    inputs: the best it can say is the data's rate."""
    import numpy as np

    from src.models.events import EventHead
    from src.training.objective import EventSampling, EventWeights, event_loss

    gen = torch.Generator().manual_seed(0)
    steps, rate, share = 20_000, 0.02, 0.25
    counts = np.array([rate * steps, (1 - 2 * rate) * steps, rate * steps])
    sampling = EventSampling(steps, tuple(int(c) for c in counts), 0, 0, int(2 * rate * steps), True, share)
    weights = EventWeights.from_counts(counts, 0, steps, 0.5, sampling if calibrate else None)
    head = EventHead(num_actions=2, frame_size=8, channels=(4,), hidden=8, action_dim=2)
    head.prior(counts / steps, 1e-3, weights.reward_shift, weights.end_shift)
    opt = torch.optim.Adam(head.parameters(), 3e-3)

    def batch(n: int, eventful: float) -> tuple[torch.Tensor, ...]:
        """n steps, `eventful` of them drawn from the rewarded steps (either sign), the rest from all steps."""
        rare = torch.rand(n, generator=gen) < eventful
        natural = torch.multinomial(torch.tensor([rate, 1 - 2 * rate, rate]), n, True, generator=gen)
        either = torch.where(torch.rand(n, generator=gen) < 0.5, 0, 2)
        rewards = torch.where(rare, either, natural).float() - 1
        frames = torch.rand(n, 5, 8, 8, generator=gen)
        return frames[:, :4], frames[:, 4:], torch.randint(0, 2, (n,), generator=gen), rewards

    for _ in range(600):
        ctx, nxt, a, r = batch(64, 0.0)
        reward, _ = event_loss(*head(ctx, nxt, a), r, torch.zeros(64, dtype=torch.bool), weights)
        ctx, nxt, a, r = batch(32, share)
        rich, _ = event_loss(*head(ctx, nxt, a), r, torch.zeros(32, dtype=torch.bool), weights)
        opt.zero_grad()
        (reward + rich).backward()
        opt.step()
    with torch.no_grad():
        ctx, nxt, a, _ = batch(2048, 0.0)
        return float(torch.softmax(head(ctx, nxt, a)[0], -1)[:, 2].mean())


def test_the_calibrated_event_head_says_the_games_reward_rate_not_the_trainings() -> None:
    """Catches the weighted loss and the event batches' over-sampling leaking into the head's probabilities (an
    agent's expected rewards): with the shifts the head gives the data's 2%; without them, many times that."""
    calibrated, inflated = _train_head_on_noise(True), _train_head_on_noise(False)
    assert calibrated == pytest.approx(0.02, abs=0.01)
    assert inflated > 0.15


def test_the_shifts_are_the_log_of_what_training_multiplies_each_class_by() -> None:
    """Catches a shift of the wrong sign or size: weights alone shift by log(weight); event batches add their
    over-sampling; a run without event batches or rewards shifts nothing beyond its weights."""
    import numpy as np

    from src.training.objective import EventSampling, EventWeights

    counts = np.array([100, 9_800, 100])
    plain = EventWeights.from_counts(
        counts, 10, 10_000, 0.5, EventSampling(10_000, (100, 9_800, 100), 0, 10, 200, False, 0.25)
    )
    assert plain.reward_shift == pytest.approx((np.log(np.sqrt(98)), 0.0, np.log(np.sqrt(98))))
    assert plain.end_shift == pytest.approx(np.log(np.sqrt(999)))
    rich = EventWeights.from_counts(
        counts, 10, 10_000, 0.5, EventSampling(10_000, (100, 9_800, 100), 10, 10, 200, True, 0.25)
    )
    rate = 210 / 10_000  # steps with a reward or an end
    boost_rare, boost_quiet = 1.75 + 0.25 / rate, 1.75 + 0.25 * (10 / 9_800) / rate
    assert rich.reward_shift[2] == pytest.approx(np.log(np.sqrt(98) * boost_rare / boost_quiet))
    assert EventWeights.from_counts(counts, 10, 10_000, 0.5).reward_shift == (0.0, 0.0, 0.0)
