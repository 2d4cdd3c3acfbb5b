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
