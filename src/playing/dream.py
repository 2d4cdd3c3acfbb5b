"""The model's imagined game (Dream): its own last frames, one prediction per action, and beside it the real
game driven by the same actions; what the screen shows of both."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from src.dataset.recorder import Recorder
from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import Game
from src.models.rollout import Feedback
from src.utils.frames import frames_to_float
from src.utils.images import gray_panel, side_by_side, text_band
from src.utils.video import pad_to_even

HELP = "arrows/space: act   N: new start   P: pause   Tab: real | dream   R: record   Esc: quit"


BAND = 22  # pixels of each text band under the picture


WARMUP_STEPS = 8  # random steps of the real game before play starts: a full 4-frame context, the game in motion


@dataclass
class Dream:
    """The model's imagined game: its own last frames, one prediction per action; beside it, when started from a
    fresh episode, the real game driven by the same actions."""

    model: torch.nn.Module
    dataset_info: dict  # the checkpoint's "dataset": what the model was trained on
    device: torch.device
    seed: int
    dataset: ShardedDataset | None = None
    recorder: Recorder | None = None
    feedback: Feedback = Feedback("uint8")  # how a prediction re-enters the context (the checkpoint's model.feedback)
    context: torch.Tensor = field(init=False)  # (1, T, H, W) float, the model's last frames
    steps: int = field(init=False, default=0)  # since the last start
    played: int = field(init=False, default=0)  # in all
    starts: int = field(init=False, default=0)
    episode: int = field(init=False, default=0)
    recording: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.meanings: list[str] = self.dataset_info["action_meanings"]
        self.game = None if self.dataset is not None else Game(EnvSettings.from_dict(self.dataset_info["env_settings"]))
        self.rng = np.random.default_rng(self.seed)
        self.new_start()

    def new_start(self) -> None:
        """A new real start: a fresh episode (seed + starts) played a few random steps in, or a recorded frame. A stretch
        being recorded is cut first: rows of a shard are consecutive steps of one episode."""
        if self.recorder is not None and self.recording:
            self.recorder.cut()
        if self.dataset is not None:
            starts = self.dataset.window_starts(1)
            obs = self.dataset.steps(int(starts[self.rng.integers(len(starts))])).obs[0]
        else:
            obs = self.game.reset(seed=self.seed + self.starts)
            self.episode = self.starts
            for _ in range(WARMUP_STEPS):
                obs = self.game.step(int(self.rng.integers(len(self.meanings)))).next_obs
        self.context = frames_to_float(torch.from_numpy(np.array(obs))[None].to(self.device))
        self.starts += 1
        self.steps = 0

    @torch.inference_mode()
    def step(self, action: int) -> None:
        predicted = self.feedback(self.model(self.context, torch.tensor([action], device=self.device)))  # (1, 1, H, W)
        self.context = torch.cat([self.context[:, 1:], predicted], dim=1)
        self.steps += 1
        self.played += 1
        if self.game is not None:
            real = self.game.step(action)
            if self.recorder is not None and self.recording:
                self.recorder.add(real, self.episode)
            if real.done:  # the real episode ended: both start again
                self.new_start()

    @property
    def real_obs(self) -> np.ndarray | None:
        """(T, H, W) uint8: the real game's last frames, None when started from a dataset."""
        return self.game.obs if self.game is not None else None

    def toggle_recording(self) -> None:
        if self.recorder is None or self.game is None:
            return
        if self.recording:
            self.recorder.cut()
        self.recording = not self.recording

    def frame(self, action: int, side_by_side_view: bool, scale: int, status: str = "") -> np.ndarray:
        """What the screen shows: the dream (or real | dream), the step and the action, and the keys. (H, W, 3) uint8."""
        dream = self.context[0, -1].float().cpu().numpy()
        if side_by_side_view:
            real = frames_to_float(self.real_obs[-1]) if self.real_obs is not None else np.zeros_like(dream)
            picture = side_by_side([gray_panel(real, scale), gray_panel(dream, scale)],
                                   ["real game" if self.real_obs is not None else "no real game (started from data)", "dream"], BAND)
        else:
            picture = side_by_side([gray_panel(dream, scale)], ["dream"], BAND)
        width = picture.shape[1]
        line = f"step {self.steps}   {self.meanings[action]}" + ("   REC" if self.recording else "") + (f"   {status}" if status else "")
        lines = [text_band([line], width, BAND, [width // 2]), text_band([HELP], width, BAND, [width // 2])]
        return pad_to_even(np.concatenate([picture, *lines], axis=0)[None])[0]
