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
