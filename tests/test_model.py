"""The world models, every variant: shapes, the copy-last-frame start, overfitting one batch, action use, state_dict.

B batch, T context frames, H/W pixels (84)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.diffusion import DiffusionConfig, Preconditioning
from src.models.world_model import MODELS, ModelConfig, build_model
from src.utils.errors import ConfigError

TINY = ModelConfig(channels=[8, 16], action_embed_dim=8)
VARIANTS = {  # a tiny config of every model in MODELS
    "unet_film": TINY,
    "unet_diamond": ModelConfig(name="unet_diamond", channels=[8, 16], action_embed_dim=8),
    "oh2015": ModelConfig(name="oh2015", channels=[8, 16, 16, 16], hidden_dim=64),
}
DEEP = {"unet_film": [8, 16, 16, 16], "unet_diamond": [8, 16, 16, 16], "oh2015": [8, 16, 16, 16, 16]}  # odd sizes
NUM_ACTIONS = 4
SIZE, SQUARE, STEP = 84, 6, 4  # frame side, square side, pixels the square moves per action
MOVES = {0: (0, -STEP), 1: (0, STEP), 2: (-STEP, 0), 3: (STEP, 0)}  # action -> (dy, dx): left, right, up, down


def random_frames(batch: int, context_frames: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, context_frames, SIZE, SIZE, generator=g)  # (B, T, H, W)
    actions = torch.randint(0, NUM_ACTIONS, (batch,), generator=g)  # (B,)
    return frames, actions


def square_frame(y: int, x: int) -> Tensor:
    frame = torch.zeros(SIZE, SIZE)  # (H, W)
    frame[y : y + SQUARE, x : x + SQUARE] = 1.0
    return frame


def moving_square_batch(num_starts: int = 6, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Each start: 4 context frames of a square drifting at random, repeated once per action.

    The drift says nothing about the action, so only the action tells where the square goes next.
    Returns frames (B, 4, H, W), actions (B,), next frames (B, 1, H, W), with B = num_starts * 4.
    """
    g = torch.Generator().manual_seed(seed)
    frames, actions, targets = [], [], []
    for _ in range(num_starts):
        y0, x0 = torch.randint(12, 60, (2,), generator=g).tolist()
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        path = [(y0 + k * dy, x0 + k * dx) for k in range(4)]  # oldest first; the last is where it is now
        context = torch.stack([square_frame(y, x) for y, x in path])  # (4, H, W)
        for action, (my, mx) in MOVES.items():
            frames.append(context)
            actions.append(action)
            targets.append(square_frame(path[-1][0] + my, path[-1][1] + mx)[None])  # (1, H, W)
    return torch.stack(frames), torch.tensor(actions), torch.stack(targets)


@dataclass
class Overfit:
    name: str
    model: nn.Module
    frames: Tensor
    actions: Tensor
    targets: Tensor
    initial_loss: float
    final_loss: float


@pytest.fixture(scope="module", params=list(VARIANTS))
def overfit(request: pytest.FixtureRequest) -> Overfit:
    """Each tiny model trained on one fixed moving-square batch (shared: training is the slow part)."""
    torch.manual_seed(0)
    model = build_model(VARIANTS[request.param], NUM_ACTIONS)
    frames, actions, targets = moving_square_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        initial_loss = F.mse_loss(model(frames, actions), targets).item()
    for _ in range(200):  # the loss is ~20-40x lower by then; the test asks for 10x
        loss = F.mse_loss(model(frames, actions), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final_loss = F.mse_loss(model(frames, actions), targets).item()
    return Overfit(request.param, model, frames, actions, targets, initial_loss, final_loss)


def test_every_model_is_tested() -> None:
    """The deterministic variants here; edm, trained with its own loss and sampled, in tests/test_diffusion.py."""
    assert set(VARIANTS) | {"edm"} == set(MODELS)


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize(
    "batch, context_frames, deep, frame_size",
    [(1, 4, False, 84), (3, 4, False, 84), (3, 2, False, 84), (3, 6, True, 84), (2, 4, False, 64)],
)
def test_output_shape_and_dtype(name: str, batch: int, context_frames: int, deep: bool, frame_size: int) -> None:
    """Catches a wrong output shape or dtype, a stem hard-wired to 4 frames or to 84 pixels, or skips misaligned
    at odd sizes (deep: more levels, down to 11 and 6 pixels for the U-Nets, 5 and 3 for oh2015)."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**VARIANTS[name].__dict__, "channels": DEEP[name] if deep else VARIANTS[name].channels})
    model = build_model(cfg, NUM_ACTIONS, context_frames, frame_size)
    g = torch.Generator().manual_seed(0)
    frames, actions = (
        torch.rand(batch, context_frames, frame_size, frame_size, generator=g),
        torch.randint(0, NUM_ACTIONS, (batch,)),
    )
    out = model(frames, actions)
    assert out.shape == (batch, 1, frame_size, frame_size)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", list(VARIANTS))
def test_initial_prediction_is_last_frame(name: str) -> None:
    """Catches a head that is not zero-initialised, or a residual added to the wrong frame (e.g. the oldest)."""
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], NUM_ACTIONS)
    frames, actions = random_frames(3)
    assert torch.equal(model(frames, actions), frames[:, -1:])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_zero_init_head_still_learns(name: str) -> None:
    """Catches a zero-initialised output layer that blocks learning: it must get gradients at the first step, and
    every other layer must by the third, once the zero layers have moved (unet_diamond's attention sits behind two of
    them); embedding rows of unused actions aside."""
    torch.manual_seed(0)
    model = build_model(VARIANTS[name], NUM_ACTIONS)
    zero_init = {n for n, p in model.named_parameters() if not p.any()}
    frames, actions = random_frames(3)
    target = torch.rand(3, 1, SIZE, SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(3):
        optimizer.zero_grad()
        F.mse_loss(model(frames, actions), target).backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        if step == 0:
            assert zero_init & with_grad, "no gradient to the zero-initialised output layer at the first step"
        optimizer.step()
    tables = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    frame_layers = {
        n for n in dict(model.named_parameters()) if not n.startswith("events.")
    }  # the event head: its own loss
    assert frame_layers - tables - with_grad == set(), "layers without gradient at the third step"


@pytest.mark.slow  # the overfit fixture trains each model 200 steps
def test_overfits_one_batch(overfit: Overfit) -> None:
    """Catches a model that cannot learn: broken gradients, a detached residual, or skips that carry nothing."""
    assert overfit.final_loss < overfit.initial_loss / 10, (overfit.initial_loss, overfit.final_loss)


@pytest.mark.slow  # the overfit fixture trains each model 200 steps
def test_prediction_depends_on_action(overfit: Overfit) -> None:
    """Catches an action embedding that is ignored or never reaches the features (FiLM not applied)."""
    model, frames, actions, targets = overfit.model, overfit.frames, overfit.actions, overfit.targets
    with torch.no_grad():
        pred = model(frames, actions)  # (B, 1, H, W)
        true_error = F.mse_loss(pred, targets, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        for shift in range(1, NUM_ACTIONS):
            wrong = model(frames, (actions + shift) % NUM_ACTIONS)  # (B, 1, H, W)
            assert (wrong - pred).abs().mean() > 1e-3
            wrong_error = F.mse_loss(wrong, targets, reduction="none").mean(dim=(1, 2, 3))  # (B,)
            assert (true_error < wrong_error).all(), (shift, true_error, wrong_error)


@pytest.mark.slow  # the overfit fixture trains each model 200 steps
def test_state_dict_round_trip(overfit: Overfit) -> None:
    """Catches state that a checkpoint does not restore (a buffer or parameter outside the state_dict)."""
    torch.manual_seed(123)  # different initial weights, so only load_state_dict can make the outputs match
    rebuilt = build_model(VARIANTS[overfit.name], NUM_ACTIONS)
    frames, actions = overfit.frames, overfit.actions
    with torch.no_grad():
        assert not torch.equal(rebuilt(frames, actions), overfit.model(frames, actions))
        rebuilt.load_state_dict(overfit.model.state_dict())
        assert torch.equal(rebuilt(frames, actions), overfit.model(frames, actions))


def test_every_variant_takes_the_shared_call_and_refuses_what_it_cannot_use() -> None:
    """Catches a variant that does not take the one call rollouts make, model(frames, actions, noise_level, logits),
    or that silently ignores what it has no use for: a level told to a model trained on clean frames, logits asked
    of a model that regresses or samples."""
    torch.manual_seed(0)
    frames, actions = random_frames(2)
    level = torch.full((2,), 0.05)
    edm = ModelConfig(name="edm", channels=[8, 16], action_embed_dim=8, diffusion=DiffusionConfig(sigma_data=0.1))
    for cfg in [*VARIANTS.values(), edm]:
        model = build_model(cfg, NUM_ACTIONS)
        with torch.no_grad():
            assert model(frames, actions, noise_level=None, logits=False).shape == (2, 1, SIZE, SIZE), cfg.name
        with pytest.raises(ValueError, match="logits"):
            model(frames, actions, logits=True)
        if cfg.name != "edm":  # edm's level is the noisy next frame's: its own test below
            with pytest.raises(ValueError, match="noise_level"):
                model(frames, actions, noise_level=level)


def test_edm_with_a_noise_level_denoises_its_last_input_frame() -> None:
    """Catches edm's training call misreading its input: the context and then the noisy next frame, whose level is
    noise_level; the raw output F must make the denoiser D = c_skip x + c_out F that sampling uses."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="edm", channels=[8, 16], action_embed_dim=8, diffusion=DiffusionConfig(sigma_data=0.1))
    model = build_model(cfg, NUM_ACTIONS)
    nn.init.normal_(model.net.head.conv.weight, std=0.1)  # a head at zero would make F 0 whatever the input
    frames, actions = random_frames(2)
    noisy, sigma = torch.randn(2, 1, SIZE, SIZE), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        out = model(torch.cat([frames, noisy], dim=1), actions, noise_level=sigma)  # (B, 1, H, W)
        c = Preconditioning.at(sigma, 0.1)
        assert torch.equal(c.c_skip * noisy + c.c_out * out, model.denoise(frames, actions, noisy, sigma))
        swapped = model(torch.cat([frames, noisy.flip(0)], dim=1), actions, noise_level=sigma)
    assert not torch.allclose(out, swapped)  # the noisy frame is an input, not ignored


def test_unknown_model_name_raises_config_error() -> None:
    """Catches a typo in model.name surfacing as a KeyError traceback instead of a one-line, fixable message."""
    assert "unet_film" in MODELS
    with pytest.raises(ConfigError, match=r"model\.name 'unet_flim' is not a model\. Did you mean 'unet_film'\?"):
        build_model(ModelConfig(name="unet_flim"), NUM_ACTIONS)


# ------------------------------------------------------------------------------------------ palette output


PALETTE_OUTPUT = ModelConfig(channels=[8, 16], action_embed_dim=8, output="palette", palette=[0, 128, 255])


@pytest.mark.slow  # 150 training steps per model
@pytest.mark.parametrize("name", ["unet_film", "unet_diamond"])
def test_palette_output_starts_as_the_last_frame_and_learns_where_the_square_goes(name: str) -> None:
    """Catches a palette head that does not copy at first, cannot learn with its cross-entropy, predicts anything but
    palette levels, or ignores the action."""
    from src.training.objective import palette_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**vars(PALETTE_OUTPUT), "name": name}), NUM_ACTIONS)
    frames, actions, targets = moving_square_batch()
    assert torch.equal(model(frames, actions), frames[:, -1:])  # the square frames are on the palette
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, scores = model(frames, actions, logits=True)
        loss, _ = palette_loss(scores[:, None], targets, (0, 128, 255))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model(frames, actions)
        wrong_action = model(frames, (actions + 1) % NUM_ACTIONS)
    assert set(torch.unique(predicted).mul(255).round().tolist()) <= {0, 128, 255}
    assert (predicted != targets).float().mean() < 0.002  # under 0.2% of the pixels wrong (the square is 0.5%)
    assert (wrong_action != targets).float().mean() > 0.004  # another action puts the square elsewhere


def test_palette_output_needs_a_palette_and_a_unet() -> None:
    with pytest.raises(ConfigError, match="model.output=palette needs model.palette"):
        build_model(ModelConfig(channels=[8, 16], output="palette"), NUM_ACTIONS)
    with pytest.raises(ConfigError, match="oh2015 predicts a residual only"):
        build_model(ModelConfig(name="oh2015", channels=[8, 16], output="palette", palette=[0, 255]), NUM_ACTIONS)


# ------------------------------------------------------------------------------------------ warp output


def test_warp_moves_each_pixel_by_its_flow() -> None:
    """Catches a flow read as (y, x), of the wrong sign, or off by the half pixel of grid_sample's corners."""
    from src.models.unet import warp

    frame = torch.zeros(1, 1, SIZE, SIZE)
    frame[0, 0, 40, 30] = 1.0
    flow = torch.zeros(1, 2, SIZE, SIZE)
    flow[:, 0], flow[:, 1] = -3.0, 2.0  # each pixel copies from 3 to its left and 2 below
    moved = warp(frame, flow)[0, 0]
    assert moved[38, 33] == pytest.approx(1.0, abs=1e-5)
    assert moved.sum() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(warp(frame, torch.zeros_like(flow)), frame, atol=1e-5)


@pytest.mark.slow  # 150 training steps
def test_warp_output_starts_as_the_last_frame_and_moves_the_square_with_its_flow() -> None:
    """Catches a warp head that does not copy at first, whose flow does not learn (the square moves 4 pixels, beyond
    the reach of a bilinear copy's gradient without the blurred guide), or that moves the square by its regressed
    change rather than by the flow."""
    from src.models.unet import warp
    from src.training.objective import flow_guide_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, output="warp"), NUM_ACTIONS)
    frames, actions, targets = moving_square_batch()
    assert torch.allclose(model(frames, actions), frames[:, -1:], atol=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        predicted, flow = model(frames, actions, logits=True)
        loss = (predicted - targets).pow(2).mean() + flow_guide_loss(frames[:, -1:], flow, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted, flow = model(frames, actions, logits=True)
        wrong_action = model(frames, (actions + 1) % NUM_ACTIONS)
    assert (predicted - targets).abs().mean() < 0.002
    assert (wrong_action - targets).abs().mean() > 0.004
    # The square is moved by the flow: the regressed change adds little where it lands. (The flow itself is not
    # unique: inside a uniform square, copying from anywhere in the old one is right.)
    inside = targets > 0.5  # (B, 1, H, W)
    change = predicted - warp(frames[:, -1:], flow)
    assert change[inside].abs().mean() < 0.1, change[inside].abs().mean()
