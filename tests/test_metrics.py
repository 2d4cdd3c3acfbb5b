"""Frame metrics (MSE, PSNR, SSIM) against independent references, whether an imagined game is alive (changed
pixels, motion, objects), and the horizon plot."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from src.training.objective import PixelLoss
from src.utils.metrics import (
    background,
    changed_precision,
    changed_recall,
    motion,
    mse_per_sample,
    objects,
    psnr,
    ratio_of_sums,
    sharpness,
    ssim,
)
from src.utils.plots import horizon_plot, save_figure

H, W = 84, 84
TOLERANCE = 1e-4


def reference_ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """scikit-image's SSIM, one image at a time in float64: (N, C, H, W) -> (N,).

    Not torchmetrics: its 1.9 default averages over the reflect-padded border too, not the valid region only.
    """
    scores = [
        structural_similarity(
            p.numpy().astype(np.float64),
            t.numpy().astype(np.float64),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for p, t in zip(prediction, target)
    ]
    return torch.tensor(scores, dtype=torch.float32)


def atari_like(n: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, H, W): dark background with bright rectangles and a ramp, like a preprocessed Atari frame."""
    frames = torch.linspace(0, 0.2, W).expand(n, 1, H, W).clone()
    for i in range(n):
        for _ in range(6):
            top, left = torch.randint(0, H - 12, (2,), generator=generator).tolist()
            height, width = torch.randint(2, 12, (2,), generator=generator).tolist()
            frames[i, :, top : top + height, left : left + width] = torch.rand(1, generator=generator).item()
    return frames


def test_ssim_matches_scikit_image_on_random_images():
    """Catches a wrong window (size, sigma, box vs Gaussian), wrong K1/K2 or padding instead of the valid region."""
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.rand(2, 5, 1, H, W, generator=generator)
    ours = ssim(prediction, target)
    assert ours.shape == (5,)
    torch.testing.assert_close(ours, reference_ssim(prediction, target), atol=TOLERANCE, rtol=0)


def test_ssim_matches_scikit_image_on_structured_images():
    """Catches errors hidden by near-zero SSIM on noise: covariance sign, mean terms, borders of flat regions."""
    generator = torch.Generator().manual_seed(1)
    target = atari_like(4, generator)
    noisy = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    shifted = torch.roll(target, shifts=(2, -3), dims=(-2, -1))
    for prediction in (noisy, shifted, 1 - target):
        ours = ssim(prediction, target)
        torch.testing.assert_close(ours, reference_ssim(prediction, target), atol=TOLERANCE, rtol=0)
    assert ssim(noisy, target).min() > ssim(torch.rand(target.shape, generator=generator), target).max()


def test_ssim_averages_channels_like_scikit_image():
    """Catches a (N, K, H, W) stack mixed across channels or reduced over the batch instead of per image."""
    generator = torch.Generator().manual_seed(2)
    target = atari_like(3, generator).expand(3, 4, H, W).contiguous()
    prediction = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    torch.testing.assert_close(ssim(prediction, target), reference_ssim(prediction, target), atol=TOLERANCE, rtol=0)


def test_ssim_is_per_image_independent_of_batch():
    """Catches the batch leaking into one image's score (e.g. conv groups or a mean over the wrong axis)."""
    generator = torch.Generator().manual_seed(3)
    prediction, target = torch.rand(2, 6, 1, H, W, generator=generator)
    batched = ssim(prediction, target)
    one_by_one = torch.cat([ssim(prediction[i : i + 1], target[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-6, rtol=0)


def test_ssim_of_identical_images_is_one_and_shapes_agree():
    """Catches stabilizing constants applied wrongly (SSIM(x, x) != 1) and (N, H, W) vs (N, 1, H, W) disagreeing."""
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, H, W, generator=generator)
    torch.testing.assert_close(ssim(x, x), torch.ones(3), atol=1e-6, rtol=0)
    y = torch.rand(3, 1, H, W, generator=generator)
    torch.testing.assert_close(ssim(x[:, 0], y[:, 0]), ssim(x, y), atol=0, rtol=0)


def test_ssim_data_range_scales_constants():
    """Catches C1/C2 not scaled by data_range: images in [0, 255] must score the same as in [0, 1]."""
    generator = torch.Generator().manual_seed(5)
    target = atari_like(2, generator)
    prediction = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    torch.testing.assert_close(
        ssim(255 * prediction, 255 * target, data_range=255.0), ssim(prediction, target), atol=1e-5, rtol=0
    )


def test_mse_and_psnr_match_numpy_and_scikit_image():
    """Catches MSE averaged over the batch or summed over pixels, and PSNR with a wrong log base or peak."""
    generator = torch.Generator().manual_seed(6)
    prediction, target = torch.rand(2, 4, 1, H, W, generator=generator, dtype=torch.float64)
    mse = mse_per_sample(prediction, target)
    expected_mse = ((prediction.numpy() - target.numpy()) ** 2).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(mse.numpy(), expected_mse, rtol=1e-12)
    expected_psnr = [peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=1.0) for p, t in zip(prediction, target)]
    np.testing.assert_allclose(psnr(mse).numpy(), expected_psnr, rtol=1e-12)
    np.testing.assert_allclose(psnr(mse).numpy(), 10 * np.log10(1 / expected_mse), rtol=1e-12)


def test_psnr_of_zero_mse_is_finite():
    """Catches log10(1/0) = inf leaking into averages of PSNR over a perfectly predicted frame."""
    assert torch.isfinite(psnr(torch.zeros(2))).all()


def test_horizon_plot_lines_labels_and_log_scale():
    """Catches a missing or mislabelled curve, x starting at 0 instead of 1, and log_y being ignored."""
    curves = {
        "model": [0.01, 0.02, 0.04],
        "copy last frame": [0.03, 0.05, 0.06],
        "model, shuffled actions": [0.02, 0.04, 0.08],
    }
    fig = horizon_plot(curves, ylabel="MSE", title="Pong", log_y=True)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == list(curves)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(curves)
    for line, values in zip(lines, curves.values()):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line.get_ydata(), values)
    assert ax.get_xlabel() == "steps ahead (open loop)"
    assert ax.get_ylabel() == "MSE" and ax.get_title() == "Pong"
    assert ax.get_yscale() == "log"
    assert horizon_plot(curves, ylabel="PSNR (dB)", title="Pong").axes[0].get_yscale() == "linear"


def test_save_figure_writes_800x500_png_atomically(tmp_path):
    """Catches a wrong size/dpi, a non-PNG file, or a temporary file left beside the PNG."""
    fig = horizon_plot({"model": [30.0, 25.0, 20.0, 18.0]}, ylabel="PSNR (dB)", title="Breakout")
    path = tmp_path / "psnr.png"
    save_figure(fig, path)
    image = iio.imread(path)
    assert image.shape[:2] == (500, 800)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["psnr.png"]
    assert image.std() > 0, "blank image: nothing was drawn"


@pytest.mark.gpu
def test_ssim_on_cuda_matches_cpu():
    """Catches a kernel built on the CPU while the images are on the GPU (device mismatch)."""
    generator = torch.Generator().manual_seed(7)
    prediction, target = torch.rand(2, 3, 1, H, W, generator=generator)
    torch.testing.assert_close(
        ssim(prediction.cuda(), target.cuda()).cpu(), ssim(prediction, target), atol=1e-5, rtol=0
    )


def test_changed_pixel_weight_counts_changed_pixels_more():
    """One pixel changes from the previous frame; an error there costs (1 + w) times an error elsewhere."""
    previous = torch.zeros(1, 1, 8, 8)
    target = previous.clone()
    target[0, 0, 2, 3] = 1.0  # the one changed pixel
    miss_change = previous.clone()  # copies the previous frame: wrong exactly where it changed
    miss_static = target.clone()
    miss_static[0, 0, 5, 5] = 1.0  # right where it changed, wrong on one static pixel
    for w in (0.0, 4.0):
        on_change, _ = PixelLoss("mse", changed_weight=w)(miss_change, target, previous)
        off_change, _ = PixelLoss("mse", changed_weight=w)(miss_static, target, previous)
        assert off_change.item() == pytest.approx(1 / 64)
        assert on_change.item() == pytest.approx((1 + w) / 64)
    _, logged = PixelLoss("huber", changed_weight=4.0)(miss_change, target, previous)
    assert logged["mse"].item() == pytest.approx(1 / 64) and logged["loss"].item() == pytest.approx(
        5 * 0.5 / 64
    )  # Huber: x^2/2


def test_sharpness_tells_blur_from_noise() -> None:
    """Catches a sharpness figure that cannot separate the two failures MSE confuses: a blurred frame scores below 1,
    the same frame with grain above 1, the frame itself exactly 1."""
    truth = torch.zeros(1, 84, 84)
    truth[:, 20:60, 30:34] = 0.9  # a paddle
    truth[:, 40:42, 50:52] = 1.0  # a ball
    kernel = torch.ones(1, 1, 5, 5) / 25
    blurred = torch.nn.functional.conv2d(truth[:, None], kernel, padding=2)[:, 0]
    grainy = (truth + 0.05 * torch.randn(1, 84, 84, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert sharpness(truth, truth).item() == 1.0
    assert sharpness(blurred, truth).item() < 0.9 and sharpness(grainy, truth).item() > 2


def test_worst_pixel_weight_adds_the_worst_pixels_loss_and_is_bounded():
    """Catches a term that is not the worst pixels' (e.g. all pixels, or the best), or weighted other than by w."""
    target = torch.zeros(1, 1, 10, 10)
    one_miss = target.clone()
    one_miss[0, 0, 4, 4] = 1.0  # one pixel of 100 wrong: the worst 1%
    spread = torch.full_like(target, 0.1)  # the same squared error in total, spread over every pixel
    for prediction, plain in ((one_miss, 1 / 100), (spread, 0.01)):
        base, _ = PixelLoss("mse")(prediction, target)
        with_worst, _ = PixelLoss("mse", worst_weight=2.0, worst_share=0.01)(prediction, target)
        assert base.item() == pytest.approx(plain)
        worst = 1.0 if prediction is one_miss else 0.01  # the mean loss of the worst pixel
        assert with_worst.item() == pytest.approx(plain + 2.0 * worst)
    large = torch.rand(2, 3, 8, 8)
    bounded, _ = PixelLoss("mse", worst_weight=2.0, worst_share=1.0)(large, torch.zeros_like(large))
    assert bounded.item() == pytest.approx(
        3 * PixelLoss("mse")(large, torch.zeros_like(large))[0].item()
    )  # share 1: the whole frame, 1 + w times


BACKGROUND, SQUARE = 51 / 255, 230 / 255  # the grey levels of a synthetic game: a square crossing a plain screen


def moving_square(steps: int) -> torch.Tensor:
    """(steps + 1, H, W): a 4x4 square moving 4 pixels right per step (no overlap between steps); frame 0 is the last
    context frame."""
    frames = torch.full((steps + 1, H, W), BACKGROUND)
    for t in range(steps + 1):
        frames[t, 40:44, 10 + 4 * t : 14 + 4 * t] = SQUARE
    return frames


def alive_scores(prediction: torch.Tensor, frames: torch.Tensor) -> dict[str, list[float]]:
    """Each alive metric of `prediction` (K, H, W) against frames[1:], per step, as evaluation aggregates one case."""
    previous_prediction = torch.cat([frames[:1], prediction[:-1]])  # step 1's previous frame: the last context frame
    scores = {}
    for name, metric in (("recall", changed_recall), ("precision", changed_precision), ("motion", motion)):
        parts = metric(prediction, frames[1:], previous_prediction, frames[:-1])  # (K, 2)
        scores[name] = ratio_of_sums(parts.numpy()[None]).tolist()  # one case
    parts = objects(prediction, frames[1:], previous_prediction, frames[:-1])
    scores["objects"] = ratio_of_sums(parts.numpy()[None]).tolist()
    return scores


def test_a_perfect_prediction_is_alive_and_a_frozen_one_is_not() -> None:
    """Catches the failure MSE misses: a frozen frame (copy of the context) scores recall 0 and motion 0, where the
    true frames score 1 on every figure."""
    frames = moving_square(3)
    perfect = alive_scores(frames[1:], frames)
    assert perfect == {"recall": [1.0] * 3, "precision": [1.0] * 3, "motion": [1.0] * 3, "objects": [1.0] * 3}
    frozen = alive_scores(frames[:1].expand(3, H, W), frames)
    assert frozen["recall"] == [0.0] * 3 and frozen["motion"] == [0.0] * 3
    assert all(np.isnan(frozen["precision"]))  # it changes nothing: nothing to count
    assert frozen["objects"] == [1.0] * 3  # the square is still there, only stopped


def test_a_smeared_prediction_has_too_many_objects_and_half_the_changes() -> None:
    """A trail: the square appears at each new place but never leaves the old ones. It has (step + 1) squares where
    the truth has one, and changes the 16 pixels the square enters but not the 16 it leaves."""
    frames = moving_square(3)
    trail = torch.cummax(frames[1:], dim=0).values.maximum(frames[:1])  # every place the square has been
    smeared = alive_scores(trail, frames)
    assert smeared["objects"] == [2.0, 3.0, 4.0]
    assert smeared["recall"] == [0.5] * 3 and smeared["precision"] == [1.0] * 3
    assert smeared["motion"] == pytest.approx([0.5] * 3)


def test_ratios_are_summed_over_cases_before_dividing() -> None:
    """Catches a mean of per-case ratios: a case with no change at a step (0 / 0) would make it NaN, and a case with
    one changed pixel would weigh as much as one with 99."""
    parts = np.array(
        [
            [[99.0, 99.0], [0.0, 0.0]],  # case 1: step 1 all 99 changed pixels found; step 2 nothing changed
            [[0.0, 1.0], [0.0, 0.0]],  # case 2: step 1 its one changed pixel missed; step 2 nothing changed
            [[0.0, 0.0], [0.0, 0.0]],  # case 3: nothing changed at all
        ]
    )  # (N=3, K=2, 2)
    ratio = ratio_of_sums(parts)
    assert ratio[0] == 0.99 and np.isnan(ratio[1])  # (99 + 0 + 0) / (99 + 1 + 0); 0 / 0 at step 2
    frames = moving_square(1)
    still = frames[:1].expand(2, H, W)  # a case whose truth does not move
    truth = torch.stack([frames[1], still[1]])  # (2, H, W): the moving case, the still case
    previous = torch.stack([frames[0], still[0]])
    prediction = torch.stack([frames[1], still[1]])
    assert ratio_of_sums(changed_recall(prediction, truth, previous, previous).numpy()[:, None]).tolist() == [1.0]


def test_a_change_is_more_than_two_grey_levels() -> None:
    """Catches float rounding of the 2/255 threshold: a step of exactly 2 levels never counts (a/255 - b/255 in float32
    exceeds 2/255 for 10 of the 254 pairs), a step of 3 always does."""
    levels = torch.arange(256, dtype=torch.float32) / 255
    for step, expected in ((2, 0), (3, 253)):
        before, after = levels[:-step].view(-1, 1, 1), levels[step:].view(-1, 1, 1)  # (256 - step, 1, 1)
        parts = changed_recall(after, after, before, before)  # the truth changes by `step` levels at every pixel
        assert parts[:, 1].sum().item() == expected


def test_background_is_the_commonest_grey_level() -> None:
    """Not the mean nor the darkest: a mostly grey frame with a dark band and a white square has a grey background."""
    frame = torch.full((1, H, W), 128 / 255)
    frame[:, :20] = 0.0  # a dark band, 20 of 84 rows
    frame[:, 50:60, 50:60] = 1.0
    assert background(frame).item() == pytest.approx(128 / 255, abs=1e-7)
    ours = objects(frame, frame, frame, frame)
    assert ours[0].tolist() == [20 * W + 100, 20 * W + 100]
