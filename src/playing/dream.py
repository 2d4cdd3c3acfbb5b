"""The model's imagined game (Dream): its own last frames, one prediction per action, and beside it the real
game driven by the same actions; the score of each, and what the screen shows of both."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from src.dataset.recorder import Recorder
from src.dataset.shards import ShardedDataset
from src.envs.game import Game
from src.models.diffusion import seed_sampling
from src.models.events import has_events
from src.models.rollout import Feedback, imagine
from src.models.run import TrainedOn
from src.utils.frames import frames_to_float
from src.utils.images import gray_panel, side_by_side, text_band
from src.utils.video import pad_to_even

HELP = "arrows/space: act   N: new start   P: pause   Tab: real | dream   R: record   Esc: quit"


BAND = 22  # pixels of each text band under the picture


END_PROBABILITY = 0.5  # the event head's end probability above which the dream episode is over
NOTICE_STEPS = 30  # steps (2 s at 15 fps) that "dream over: score X" stays in the band after an episode's end


@dataclass
class Dream:
    """The model's imagined game: its own last frames, one prediction per action; beside it, when started from a
    fresh episode, the real game driven by the same actions.

    With an event head (model.events) the dream keeps a score, the sum of the predicted reward signs since the last
    start, and its episode is over when the head's end probability passes END_PROBABILITY; the real game's score is
    the sum of its rewards since the same start. Either episode's end starts both anew, as the N key does."""

    model: torch.nn.Module
    trained_on: TrainedOn  # what the model was trained on: its actions and the game's settings
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
    score: float = field(init=False, default=0.0)  # the dream's: predicted reward signs since the last start
    reward: float = field(init=False, default=0.0)  # the last step's predicted reward sign
    end_probability: float = field(init=False, default=0.0)  # the last step's
    real_score: float = field(init=False, default=0.0)  # the real game's rewards since the last start
    notice: str = field(init=False, default="")  # how the last episode ended, shown for NOTICE_STEPS steps

    def __post_init__(self) -> None:
        self.meanings: list[str] = self.trained_on.action_meanings
        self.keeps_score = has_events(
            self.model
        )  # frames-only models (checkpoints from before the event head) keep none
        self.game = None if self.dataset is not None else Game(self.trained_on.settings)
        self.rng = np.random.default_rng(self.seed)
        seed_sampling(self.model, self.seed)  # a diffusion model's samples: the same dream for the same seed and keys
        self.new_start()

    def new_start(self, notice: str = "") -> None:
        """A new real start: a fresh episode (seed + starts) played a few random steps in, or a recorded frame. A
        stretch being recorded is cut first: rows of a shard are consecutive steps of one episode. `notice`: why (an
        episode's end), shown in the band for the first NOTICE_STEPS steps."""
        if self.recorder is not None and self.recording:
            self.recorder.cut()
        if self.dataset is not None:
            starts = self.dataset.window_starts(1)
            obs = self.dataset.steps(int(starts[self.rng.integers(len(starts))])).obs[0]
        else:
            obs = self.game.reset_in_motion(self.seed + self.starts, self.rng)
            self.episode = self.starts
        self.context = frames_to_float(torch.from_numpy(np.array(obs))[None].to(self.device))
        self.starts += 1
        self.steps = 0
        self.score = self.reward = self.end_probability = self.real_score = 0.0
        self.notice = notice

    @torch.inference_mode()
    def step(self, action: int) -> None:
        imagined = imagine(self.model, self.context, torch.tensor([[action]], device=self.device), self.feedback)
        self.context = torch.cat([self.context[:, 1:], imagined.frames], dim=1)  # (1, T, H, W)
        self.steps += 1
        self.played += 1
        if self.keeps_score:
            self.reward, self.end_probability = float(imagined.rewards[0, 0]), float(imagined.end_probs[0, 0])
            self.score += self.reward
        real_done = False
        if self.game is not None:
            real = self.game.step(action)
            if self.recorder is not None and self.recording:
                self.recorder.add(real, self.episode)
            self.real_score += real.reward
            real_done = real.done
        dream_over = self.end_probability > END_PROBABILITY  # 0 without an event head
        if dream_over or real_done:  # either episode ended: both start again
            self.new_start(self.over_text(dream_over, real_done))

    def over_text(self, dream_over: bool, real_done: bool) -> str:
        """The band's line for the end of the dream's episode, the real game's, or both."""
        dream = (
            f"dream over: score {self.score:.0f}"
            if dream_over
            else f"dream score {self.score:.0f}"
            if self.keeps_score
            else ""
        )
        real = (
            f"real game over: score {self.real_score:.0f}"
            if real_done
            else (f"real score {self.real_score:.0f}" if self.game is not None else "")
        )
        return "   ".join(t for t in (dream, real, "new start") if t)

    def score_text(self) -> str:
        """The band's line for the scores: the dream's (and its last reward when not 0) and the real game's; after an
        episode's end, how it ended."""
        if self.notice and self.steps < NOTICE_STEPS:
            return self.notice
        dream = (
            f"dream score {self.score:.0f}" + (f" ({self.reward:+.0f})" if self.reward else "")
            if self.keeps_score
            else "the model predicts no score"
        )
        return f"{dream}   real score {self.real_score:.0f}" if self.game is not None else dream

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
        """What the screen shows: the dream (or real | dream), the step and the action, the scores, and the keys.
        (H, W, 3) uint8."""
        dream = self.context[0, -1].float().cpu().numpy()
        if side_by_side_view:
            real = frames_to_float(self.real_obs[-1]) if self.real_obs is not None else np.zeros_like(dream)
            picture = side_by_side(
                [gray_panel(real, scale), gray_panel(dream, scale)],
                ["real game" if self.real_obs is not None else "no real game (started from data)", "dream"],
                BAND,
            )
        else:
            picture = side_by_side([gray_panel(dream, scale)], ["dream"], BAND)
        width = picture.shape[1]
        line = (
            f"step {self.steps}   {self.meanings[action]}"
            + ("   REC" if self.recording else "")
            + (f"   {status}" if status else "")
        )
        lines = [text_band([text], width, BAND, [width // 2]) for text in (line, self.score_text(), HELP)]
        return pad_to_even(np.concatenate([picture, *lines], axis=0)[None])[0]
