"""B imagined games stepped together: what WorldModelEnv (B = 1) and WorldModelVectorEnv share.

Axes: B games, T context frames (oldest first), H x W pixels.

    games = ImaginedGames(model, num_actions=6, num_envs=16, frame_shape=(4, 84, 84), feedback=Feedback("uint8"),
                          device=torch.device("cpu"))
    games.set(np.arange(16), frames)                  # (16, T, H, W) uint8 real frames
    rewards, end_probs = games.step(actions)          # (16,) each; games.observations() (16, T, H, W) uint8

Where real starts come from (`Starts`): a recorded dataset's window, or a fresh episode of the real game played a few
random steps in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import Game
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint
from src.models.events import has_events
from src.models.rollout import Feedback, imagine
from src.models.run import TrainedOn, find_checkpoint
from src.utils.device import choose_device
from src.utils.errors import UserError
from src.utils.frames import frames_to_float

NO_EVENTS = (
    "predicts frames only (no event head: model.events=false, or saved before the head existed), so it cannot "
    "give rewards or episode ends; retrain it with model.events=true"
)


class Starts:
    """Real frame stacks to start imagined games from: a random window of `dataset` if given, else a fresh episode
    of the real game (`settings`, through src.envs) played a few random steps in (Game.reset_in_motion). Every draw
    comes from `rng` alone, so a seeded generator gives the same start."""

    def __init__(self, dataset: ShardedDataset | None, settings: EnvSettings) -> None:
        self.dataset, self.settings = dataset, settings
        self.rows = dataset.window_starts(1) if dataset is not None else None
        self.game: Game | None = None  # made at the first draw: an env reset only with reset_to needs no emulator

    def draw(self, rng: np.random.Generator, num_actions: int) -> np.ndarray:
        """One start: (T, H, W) uint8."""
        if self.dataset is not None:
            return self.dataset.steps(int(self.rows[rng.integers(len(self.rows))])).obs[0]
        if self.game is None:
            self.game = Game(self.settings)
        return np.array(self.game.reset_in_motion(int(rng.integers(2**31 - 1)), rng))

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None


class ImaginedGames:
    """B games inside the model: each step is one forward pass of the frame predictor and one of the event head over
    the games stepped, on the model's device. The context holds the frames as fed back (`feedback`); observations are
    them rounded to uint8."""

    def __init__(
        self,
        model: nn.Module,
        num_actions: int,
        num_envs: int,
        frame_shape: tuple[int, int, int],
        feedback: Feedback,
        device: torch.device,
    ) -> None:
        if not has_events(model):
            raise UserError(f"the world model {NO_EVENTS}")
        if num_envs < 1:
            raise UserError(f"num_envs must be >= 1, got {num_envs}")
        trained_for = getattr(getattr(model.events, "action", None), "num_embeddings", None)  # the event head's actions
        if trained_for is not None and trained_for != num_actions:
            # more actions than the model embeds would fail deep in torch at the first step that plays one
            raise UserError(f"num_actions is {num_actions}, but the world model was built for {trained_for} actions")
        self.model, self.num_actions, self.feedback, self.device = (
            model.eval().to(device),
            num_actions,
            feedback,
            device,
        )
        self.context = torch.zeros(num_envs, *frame_shape, device=device)  # (B, T, H, W) float in [0, 1]

    @torch.inference_mode()
    def set(self, rows: np.ndarray, frames: np.ndarray) -> None:
        """Start games `rows` (n,) from real frames (n, T, H, W) uint8."""
        if frames.shape != (len(rows), *self.context.shape[1:]) or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be ({len(rows)}, {', '.join(map(str, self.context.shape[1:]))}) uint8 frame "
                f"stacks (one per game started), got {tuple(frames.shape)} {frames.dtype}"
            )
        self.context[torch.as_tensor(rows, device=self.device)] = frames_to_float(
            torch.from_numpy(frames).to(self.device)
        )

    @torch.inference_mode()
    def step(self, actions: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Step games `rows` (n,) (all when None) by actions (n,) int: returns their reward signs and end probabilities,
        (n,) float32 each. One batched rollout.imagine step."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.min(initial=0) < 0 or actions.max(initial=0) >= self.num_actions:
            raise ValueError(f"actions must be in [0, {self.num_actions}), got {actions.tolist()}")
        index = None if rows is None or len(rows) == len(self.context) else torch.as_tensor(rows, device=self.device)
        context = self.context if index is None else self.context[index]  # (n, T, H, W)
        imagined = imagine(self.model, context, torch.from_numpy(actions).to(self.device)[:, None], self.feedback)
        stepped = torch.cat([context[:, 1:], imagined.frames], dim=1)  # (n, T, H, W)
        if index is None:
            self.context = stepped
        else:
            self.context[index] = stepped
        return imagined.rewards[:, 0].float().cpu().numpy(), imagined.end_probs[:, 0].float().cpu().numpy()

    def observations(self) -> np.ndarray:
        """(B, T, H, W) uint8: the context rounded to grey levels."""
        return (self.context * 255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


@dataclass
class CheckpointWorld:
    """What an env needs from a checkpoint, as keyword arguments of WorldModelEnv and WorldModelVectorEnv."""

    model: nn.Module
    num_actions: int
    feedback: Feedback
    action_meanings: list[str]
    env_settings: EnvSettings
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> CheckpointWorld:
        """A checkpoint file or a run folder (its best.pt, else last.pt); device None: a GPU if there is one."""
        file = find_checkpoint(path, "weights")
        state = read_checkpoint(file)
        model = model_from_checkpoint(state)
        if not has_events(model):
            raise UserError(f"checkpoint '{file}' {NO_EVENTS}")
        trained_on = TrainedOn.of(state)
        device = device if isinstance(device, torch.device) else choose_device(device)
        return cls(
            model,
            trained_on.num_actions,
            Feedback.of(model_config(state)),
            list(trained_on.action_meanings),
            trained_on.settings,
            device,
        )

    def kwargs(self) -> dict:
        return dict(self.__dict__)
