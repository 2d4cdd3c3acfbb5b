"""The ball in open-loop rollouts: does the predicted frame show a ball where the real game has one, and how far
from the real ball is it. For the games whose ball src.envs.ball knows (tracks_ball), in windows of played
episodes (the RAM gives the real ball; a recorded dataset has no RAM).

    parts = ball_parts([predicted], windows.ball[sl], "Pong")   # per case and step, as src.eval's evaluate does
    block = ball_block({"model": parts, ...})                   # summary.json's "ball", per step over the cases
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from src.envs.ball import ball_scores
from src.utils.io import json_safe
from src.utils.metrics import ratio_of_sums

# N cases, K steps, S samples of a stochastic model, H/W pixels
BALL_METHODS = ("model", "copy_last", "model_shuffled_actions")  # the methods of src.evaluation.cases scored


def ball_parts(predicted: list[Tensor], real: np.ndarray, game: str) -> dict[str, np.ndarray]:
    """predicted: S rollouts (N, K, H, W) in [0, 1] from the same starts; real: (N, K, 2) the real ball (Steps.ball),
    nan where absent. Returns the ratios' parts per case and step, each (N, K, 2), the mean over the S rollouts:

        present   [the real ball is in the searched area and the prediction shows a ball, the real ball is there]
        distance  [pixels from the predicted ball to the real one where both are there, 1 where both are there]
    """
    parts = []
    for frames in predicted:
        scores = ball_scores(frames.float().cpu().numpy(), real, game)  # (N, K) each
        both = scores["present"] & scores["real_present"]  # exactly where the distance is not nan
        parts.append(
            np.stack([both, scores["real_present"], np.where(both, scores["distance"], 0.0), both], axis=-1).astype(
                np.float64
            )
        )  # (N, K, 4)
    mean = np.mean(parts, axis=0)
    return {"present": mean[..., :2], "distance": mean[..., 2:]}


def count(value: float) -> int | float:
    """A count as JSON writes it: an integer, or for a stochastic model's mean over samples a fraction."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


def ball_block(parts: dict[str, dict[str, np.ndarray]]) -> dict:
    """{method: ball_parts of all the cases} -> summary.json's "ball", per step over the cases (ratios of sums; None
    where there was nothing to count):

        present   {method: [K]} of the steps with the real ball in the searched area, the share where the
                  prediction shows a ball
        distance  {method: [K]} mean pixels from the predicted ball to the real one, where both are there
        counted   [K] cases the model's distance is the mean of (both balls there)
        real      [K] cases with the real ball in the searched area (present's denominator)
    """
    model = parts["model"]
    return {
        "present": {m: json_safe(ratio_of_sums(p["present"]).tolist()) for m, p in parts.items()},
        "distance": {m: json_safe(ratio_of_sums(p["distance"]).tolist()) for m, p in parts.items()},
        "counted": [count(c) for c in model["distance"][..., 1].sum(0)],
        "real": [count(c) for c in model["present"][..., 1].sum(0)],
    }


def ball_at(ball: dict, steps: list[int]) -> dict[str, dict[str, float | None]]:
    """The model's ball_present and ball_distance at `steps` (1-based), as summary.json's "alive" block has them."""
    return {f"ball_{name}": {str(k): ball[name]["model"][k - 1] for k in steps} for name in ("present", "distance")}
