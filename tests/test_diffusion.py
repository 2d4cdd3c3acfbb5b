"""The diffusion world model (model.name=edm): EDM's preconditioning and sampler against their formulas, the denoiser
that is handed the clean frame, a tiny model that learns where a square goes, seeded samples, and its config checks.

B batch, T context frames, H/W pixels (84)
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.config import ConfigError, load_config
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.models.diffusion import (
    DiffusionConfig,
    Preconditioning,
    karras_sigmas,
    sample_frames,
    seed_sampling,
)
from src.models.rollout import Feedback, rollout
from src.models.world_model import ModelConfig, build_model
from src.training.objective import denoising_loss
from src.utils.errors import UserError
from tests.conftest import ROOT, tiny_config
from tests.test_model import NUM_ACTIONS, moving_square_batch, random_frames

TINY_EDM = ModelConfig(
    name="edm", channels=[8, 16], action_embed_dim=8, events=False, diffusion=DiffusionConfig(sigma_data=0.5)
)


@pytest.mark.parametrize("sigma", [0.002, 0.1, 0.5, 1.0, 5.0, 80.0])
@pytest.mark.parametrize("sigma_data", [0.5, 0.1])
def test_preconditioning_is_edms(sigma: float, sigma_data: float) -> None:
    """Karras et al. 2022, table 1, written out by hand: c_in = 1/sqrt(σ²+σd²), c_skip = σd²/(σ²+σd²),
    c_out = σσd/sqrt(σ²+σd²), c_noise = ln(σ)/4. And what makes them right: D = c_skip x + c_out F has unit-variance
    input and target for data of std σd (c_in² (σd² + σ²) = 1, c_skip² σ² + (1 - c_skip)² σd² = c_out²)."""
    c = Preconditioning.at(torch.tensor([sigma], dtype=torch.float64), sigma_data)
    total = sigma**2 + sigma_data**2
    assert c.c_in.item() == pytest.approx(1 / math.sqrt(total), rel=1e-12)
    assert c.c_skip.item() == pytest.approx(sigma_data**2 / total, rel=1e-12)
    assert c.c_out.item() == pytest.approx(sigma * sigma_data / math.sqrt(total), rel=1e-12)
    assert c.c_noise.item() == pytest.approx(math.log(sigma) / 4, rel=1e-12)
    assert c.c_in.item() ** 2 * total == pytest.approx(1, rel=1e-12)
    assert c.c_skip.item() ** 2 * sigma**2 + (1 - c.c_skip.item()) ** 2 * sigma_data**2 == pytest.approx(
        c.c_out.item() ** 2, rel=1e-9
    )
    assert c.c_in.shape == c.c_skip.shape == c.c_out.shape == (1, 1, 1, 1) and c.c_noise.shape == (1,)


def test_karras_schedule() -> None:
    """From sigma_max down to sigma_min evenly in σ^(1/ρ), then 0; one step: sigma_max then 0."""
    sigmas = karras_sigmas(3, 0.002, 5.0, 7.0)
    middle = ((5.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert sigmas.tolist() == pytest.approx([5.0, middle, 0.002, 0.0], rel=1e-12)
    assert karras_sigmas(1, 0.002, 5.0, 7.0).tolist() == [5.0, 0.0]
    assert (karras_sigmas(10, 0.002, 5.0, 7.0).diff() < 0).all()


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sampler_with_a_perfect_denoiser_returns_the_data(sampler: str, steps: int) -> None:
    """A denoiser that knows the data point returns it from any noise, at any step count: the last step goes to σ = 0,
    where x = D."""
    data = torch.rand(2, 1, 84, 84) * 2 - 1
    out = sample_frames(
        lambda x, sigma: data, torch.randn(2, 1, 84, 84), karras_sigmas(steps, 0.002, 5.0, 7.0), sampler
    )
    assert torch.allclose(out, data, atol=1e-5)  # float32 rounding of x - (x - D) with x of size ~15


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_sampler_with_the_ideal_denoiser_of_two_points_lands_on_one_of_them(sampler: str) -> None:
    """The exact denoiser of a two-point dataset {a, b} (posterior mean: a and b weighted by exp(-|x - p|² / 2σ²)):
    the probability flow carries every noise sample to a or b, about half to each, not to their blurred mean."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.full((16,), -0.8), torch.full((16,), 0.6)

    def ideal(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, 1)
        logits = torch.stack(
            [-(x - a).pow(2).sum(1) / (2 * s[:, 0] ** 2), -(x - b).pow(2).sum(1) / (2 * s[:, 0] ** 2)], 1
        )
        w = logits.softmax(1)
        return w[:, :1] * a + w[:, 1:] * b

    out = sample_frames(ideal, torch.randn(400, 16, generator=g), karras_sigmas(10, 0.002, 5.0, 7.0), sampler)
    to_a, to_b = (out - a).abs().amax(1), (out - b).abs().amax(1)
    assert (torch.minimum(to_a, to_b) < 1e-3).all(), torch.minimum(to_a, to_b).max()
    assert 0.3 < (to_a < to_b).float().mean() < 0.7


@pytest.mark.parametrize("target", ["residual", "frame"])
def test_denoiser_handed_the_clean_frame_recovers_it(target: str) -> None:
    """At the lowest noise level, D(x0) is x0 whatever the network says (c_skip ~ 1, c_out ~ σ), in frame space:
    catches the residual's anchor (the last frame) added on the wrong side, or [0, 1] vs [-1, 1] mixed up."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_EDM.__dict__, "diffusion": DiffusionConfig(target=target, sigma_data=0.5)})
    model = build_model(cfg, NUM_ACTIONS).eval()
    with torch.no_grad():  # weights far from zero: the network's output is not what makes it pass
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    frames, actions = random_frames(3)
    clean = torch.rand(3, 1, 84, 84)
    anchor = 2 * frames[:, -1:] - 1 if target == "residual" else 0
    x0 = 2 * clean - 1 - anchor
    with torch.no_grad():
        denoised = model.denoise(frames, actions, x0, torch.full((3,), 0.002))
        assert ((denoised + anchor + 1) / 2 - clean).abs().max() < 0.01
        far = model.denoise(frames, actions, x0, torch.full((3,), 5.0))  # at high noise it is the network's guess
        assert ((far + anchor + 1) / 2 - clean).abs().max() > 0.05


def test_samples_are_seeded_and_reproducible() -> None:
    """The same seed gives the same sample, bit for bit, whatever was drawn before; another seed another sample; and
    sampling leaves torch's global random stream (training's) untouched."""
    torch.manual_seed(0)
    model = build_model(TINY_EDM, NUM_ACTIONS).eval()
    frames, actions = random_frames(2)
    with torch.no_grad():
        seed_sampling(model, 7)
        first = model(frames, actions)
        model(frames, actions)  # draws more noise
        seed_sampling(model, 7)
        state = torch.get_rng_state()
        again = model(frames, actions)
        assert torch.equal(torch.get_rng_state(), state)
        seed_sampling(model, 8)
        other = model(frames, actions)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.fixture(scope="module")
def trained_edm() -> torch.nn.Module:
    """A tiny edm trained with its own loss (denoising_loss, as training does) on the moving-square batch."""
    torch.manual_seed(0)
    model = build_model(TINY_EDM, NUM_ACTIONS)
    frames, actions, targets = moving_square_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(400):
        loss, _ = denoising_loss(model, frames, actions, targets, TINY_EDM.diffusion)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow  # the trained_edm fixture trains 400 steps
def test_denoising_loss_falls(trained_edm: torch.nn.Module) -> None:
    """Catches a loss that cannot be learned (a target in the wrong space, the preconditioning applied twice)."""
    frames, actions, targets = moving_square_batch()
    torch.manual_seed(1)
    untrained = build_model(TINY_EDM, NUM_ACTIONS)
    losses = []
    for model in (untrained, trained_edm):
        torch.manual_seed(2)  # the same noise levels and noise for both
        with torch.no_grad():
            losses.append(denoising_loss(model, frames, actions, targets, TINY_EDM.diffusion)[0].item())
    assert losses[1] < losses[0] / 5, losses


@pytest.mark.slow  # the trained_edm fixture trains 400 steps
def test_samples_put_the_square_where_the_action_sends_it(trained_edm: torch.nn.Module) -> None:
    """The trained model's samples, in 3 Euler steps: nearer the true next frame than copying the last one, and
    nearer with the true action than with another (the action reaches the denoiser)."""
    frames, actions, targets = moving_square_batch()
    with torch.no_grad():
        seed_sampling(trained_edm, 0)
        true_action = F.mse_loss(trained_edm(frames, actions).clamp(0, 1), targets).item()
        seed_sampling(trained_edm, 0)
        wrong_action = F.mse_loss(trained_edm(frames, (actions + 1) % NUM_ACTIONS).clamp(0, 1), targets).item()
    copy_last = F.mse_loss(frames[:, -1:], targets).item()
    assert true_action < copy_last / 2, (true_action, copy_last)
    assert true_action < wrong_action / 2, (true_action, wrong_action)


@pytest.mark.slow  # the trained_edm fixture trains 400 steps
def test_rollout_feeds_back_clamped_rounded_samples(trained_edm: torch.nn.Module) -> None:
    """A rollout of samples: every frame clamped to [0, 1] and on the 256 grey levels, as any fed-back frame."""
    frames, actions, _ = moving_square_batch(num_starts=1)
    predicted = rollout(trained_edm, frames, actions[:, None].repeat(1, 3), Feedback("uint8"))  # (B, 3, H, W)
    assert predicted.min() >= 0 and predicted.max() <= 1
    assert torch.equal(predicted * 255, (predicted * 255).round())


def test_sampling_steps_cost_network_calls() -> None:
    """steps Euler steps call the network steps times; Heun twice per step but the last."""
    model = build_model(TINY_EDM, NUM_ACTIONS).eval()
    calls = []
    model.net.register_forward_hook(lambda *_: calls.append(1))
    frames, actions = random_frames(1)
    with torch.no_grad():
        for steps, sampler, expected in ((1, "euler", 1), (3, "euler", 3), (10, "euler", 10), (3, "heun", 5)):
            calls.clear()
            model.diffusion.sampler = sampler
            model.sample(frames, actions, steps)
            assert len(calls) == expected, (steps, sampler, len(calls))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.rollout_steps=[1,3]", "train.rollout_stage_ends=[0.5]"], "train.rollout_steps"),
        (["model.output=palette"], "model.output"),
        (["model.context_noise=0.1"], "model.context_noise"),
        (["model.diffusion.sampler=ddim"], "model.diffusion.sampler"),
        (["model.diffusion.sigma_min=10"], "model.diffusion.sigma_min"),
        (["model.diffusion.steps=0"], "model.diffusion.steps"),
        (["model.diffusion.target=noise"], "model.diffusion.target"),
    ],
)
def test_config_refuses_what_edm_cannot_do(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(ROOT / "config.yaml", ["model.name=edm", *overrides])


# ------------------------------------------------------------------------------------------ through the tools


@pytest.fixture(scope="module")
def edm_run(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 real training steps of a tiny edm with its event head, validating (samples, and the rollout videos) at 2
    and 4."""
    from src.training.loop import train

    cfg = tiny_config(
        small_dataset,
        tmp_path_factory.mktemp("edm"),
        "model.name=edm",
        "train.max_steps=4",
        "train.log_every=2",
        "train.val_every_steps=2",
        "experiment.wandb.mode=disabled",
    )
    return Path(train(cfg)["run_dir"])


def test_training_run_writes_a_checkpoint_that_samples_like_the_trained_model(edm_run: Path) -> None:
    """Training's loss is the denoising loss (finite, in metrics.csv), validation samples, and the checkpoint rebuilds
    the same model: the same seed, the same sample."""
    rows = list(csv.DictReader((edm_run / "metrics.csv").open()))
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    assert list((edm_run / "videos").glob("*.mp4")), "no validation rollout video"
    state = read_checkpoint(edm_run / "checkpoints" / "last.pt")
    first, second = model_from_checkpoint(state).eval(), model_from_checkpoint(state).eval()
    frames, actions = random_frames(2)
    with torch.no_grad():
        seed_sampling(first, 3)
        seed_sampling(second, 3)
        assert torch.equal(first(frames, actions % 6), second(frames, actions % 6))


def test_eval_scores_single_samples_and_their_mean(edm_run: Path, tmp_path: Path) -> None:
    """--samples 3 --sampling_steps 1: the summary says so, holds the mean's ratios and curves beside a sample's, the
    CSV has model_mean_* columns; the same seed gives the same figures."""
    from src.eval import evaluate_checkpoint
    from src.evaluation.config import EvalConfig

    runs = [
        evaluate_checkpoint(
            EvalConfig(
                edm_run,
                episodes=1,
                starts_per_episode=2,
                horizon=3,
                videos=1,
                out_dir=tmp_path / str(i),
                samples=3,
                sampling_steps=1,
                event_episodes=1,
                event_horizon=2,
            )
        )
        for i in range(2)
    ]
    summary = runs[0]
    assert (summary["samples"], summary["sampling_steps"]) == (3, 1)
    assert set(summary["mean_mse_ratio_to_copy"]) == set(summary["mse_ratio_to_copy"]) == {"1"}
    assert len(summary["mse"]["model_mean"]) == 3
    # The mean of samples is nearer the truth than one sample is, on average (MSE is convex).
    assert all(m <= s + 1e-12 for m, s in zip(summary["mse"]["model_mean"], summary["mse"]["model"]))
    header = (summary["out_dir"] / "metrics.csv").read_text().splitlines()[0]
    assert "model_mean_mse" in header and "model_mean_sharpness" in header
    assert runs[1]["mse"] == summary["mse"] and runs[1]["sharpness"] == summary["sharpness"]


def test_sampling_steps_on_a_deterministic_checkpoint_is_refused(short_run, tmp_path: Path) -> None:
    from src.eval import evaluate_checkpoint
    from src.evaluation.config import EvalConfig

    with pytest.raises(UserError, match="--sampling_steps is for a diffusion model"):
        evaluate_checkpoint(
            EvalConfig(
                short_run[1]["run_dir"],
                episodes=1,
                starts_per_episode=1,
                horizon=2,
                videos=0,
                out_dir=tmp_path,
                sampling_steps=3,
            )
        )


def test_imagined_env_with_edm_is_seeded(edm_run: Path) -> None:
    """The gymnasium env inside an edm: reset(seed=s) replays the same game for the same actions, samples included."""
    from src.imagination import WorldModelEnv

    def play(seed: int) -> np.ndarray:
        env = WorldModelEnv.from_checkpoint(edm_run, device="cpu")
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(a)[0] for a in (0, 3, 2, 1)]
        return np.stack(frames)

    assert np.array_equal(play(5), play(5))


def test_sigma_data_is_the_std_of_what_is_diffused(small_dataset: Path) -> None:
    """Training's model.diffusion.sigma_data: the standard deviation in [-1, 1] of the next frames (target frame) or of
    their change from the last context frame (target residual), here over 50 rows (all of them sampled), against
    numpy's std of the stacked frames; the change is far smaller than the frames (Pong is mostly still)."""
    from src.dataset.shards import ShardedDataset
    from src.training.data import diffusion_sigma_data

    data = ShardedDataset(small_dataset)
    rows = np.arange(50)
    steps = [data.steps(int(r), 1) for r in rows]
    nxt = np.stack([s.next_obs[0, -1] for s in steps]).astype(np.float64) * 2 / 255 - 1
    last = np.stack([s.obs[0, -1] for s in steps]).astype(np.float64) * 2 / 255 - 1
    assert diffusion_sigma_data(data, rows, "frame") == pytest.approx(nxt.std(), rel=1e-9)
    assert diffusion_sigma_data(data, rows, "residual") == pytest.approx((nxt - last).std(), rel=1e-9)
    assert diffusion_sigma_data(data, rows, "residual") < diffusion_sigma_data(data, rows, "frame") / 3


def test_resumed_edm_run_keeps_its_sigma_data(edm_run: Path, tmp_path: Path) -> None:
    """A resumed run takes sigma_data from its checkpoint (the config's null would otherwise be refused as a change)."""
    import shutil

    from src.training.loop import train

    run_dir = tmp_path / edm_run.name
    shutil.copytree(edm_run, run_dir)
    saved = read_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["model"]["diffusion"]["sigma_data"]
    assert 0 < saved < 1
    cfg = tiny_config(
        Path(read_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["data"]["dir"]),
        tmp_path,
        "model.name=edm",
        "train.max_steps=6",
        "train.log_every=2",
        "train.val_every_steps=2",
        "experiment.wandb.mode=disabled",
        f"train.resume={run_dir}",
    )
    result = train(cfg)
    state = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert result["step"] == state["step"] == 6
    assert state["config"]["model"]["diffusion"]["sigma_data"] == saved


def test_play_dreams_with_edm_the_same_for_the_same_seed(edm_run: Path) -> None:
    """Play's dream with a diffusion model: the same seed and keys give the same dream, another seed (other samples,
    and another real start) another one."""
    from tests.test_play import dream_frames

    checkpoint = edm_run / "checkpoints" / "last.pt"
    first, _ = dream_frames(checkpoint, "RIGHT*4")
    again, _ = dream_frames(checkpoint, "RIGHT*4")
    other, _ = dream_frames(checkpoint, "RIGHT*4", seed=1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
