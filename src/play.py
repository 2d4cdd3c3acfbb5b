"""Play inside the world model: press keys and watch the model imagine the game's answer.

    python -m src.play --checkpoint runs/<run>/checkpoints/best.pt [--fps 15] [--scale 6] [--seed 0]
    python -m src.play --checkpoint ... --data_dir data/pong           # start from recorded frames instead
    python -m src.play --checkpoint ... --headless --keys "RIGHT*30,LEFT*30" --video out.mp4 --seed 0

Each frame is predicted from the model's own last four frames and the action of the keys held: arrows and
space (FIRE), combined as the game's action meanings name them (UPRIGHTFIRE...). From a fresh episode the real
game runs beside the dream with the same actions: Tab shows both (real | dream), and R records the real game's
steps into a dataset of src.dataset.generate_dataset's format (--record DIR), to be trained on.
Keys: arrows/space act, N new start, P pause, Tab real | dream, R record on/off, Esc quits.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from src.dataset.manifest import Manifest
from src.dataset.shards import ShardedDataset, ShardWriter, promote_shard
from src.envs.atari import EnvSettings
from src.envs.game import Game, Transition
from src.models.checkpoint import model_from_checkpoint, read_checkpoint
from src.utils.device import choose_device
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.frames import frames_to_float
from src.utils.images import gray_panel, side_by_side, text_band
from src.utils.video import pad_to_even, write_video

KEYS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
HELP = "arrows/space: act   N: new start   P: pause   Tab: real | dream   R: record   Esc: quit"
BAND = 22  # pixels of each text band under the picture
WARMUP_STEPS = 8  # random steps of the real game before play starts: a full 4-frame context, the game in motion


# ------------------------------------------------------------------------------------------ keys -> actions


def action_for(pressed: set[str], meanings: list[str]) -> int:
    """The game's action for the keys held. ALE names combine UP/DOWN, RIGHT/LEFT and FIRE in that order
    (UPRIGHTFIRE); a combination the game lacks falls back to fewer keys (FIRE kept longest), then NOOP."""
    vertical = [k for k in ("UP", "DOWN") if k in pressed]
    horizontal = [k for k in ("RIGHT", "LEFT") if k in pressed]
    v = vertical[0] if len(vertical) == 1 else ""  # both of a pair held: they cancel
    h = horizontal[0] if len(horizontal) == 1 else ""
    fire = "FIRE" if "FIRE" in pressed else ""
    for name in (v + h + fire, h + fire, v + fire, fire, v + h, h, v):
        if name and name in meanings:
            return meanings.index(name)
    return meanings.index("NOOP") if "NOOP" in meanings else 0


def parse_keys(spec: str, meanings: list[str]) -> list[int]:
    """'RIGHT*30,UP+FIRE*5,NOOP' -> one action per step. A token is keys joined by '+' (UP, DOWN, LEFT, RIGHT,
    FIRE or SPACE; NOOP for none) or an action name of the game (RIGHTFIRE), with an optional repeat '*N'."""
    actions = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        match = re.fullmatch(r"([A-Za-z+]+)(?:\*(\d+))?", token)
        if not match:
            raise UserError(f"--keys: cannot read '{token}'; write KEYS or KEYS*N, e.g. RIGHT*30 or UP+FIRE*5")
        name, repeat = match[1].upper(), int(match[2] or 1)
        if name in meanings:
            action = meanings.index(name)
        else:
            keys = {"FIRE" if k == "SPACE" else k for k in name.split("+")} - {"NOOP"}
            unknown = sorted(keys - set(KEYS))
            if unknown:
                raise UserError(f"--keys: unknown key '{unknown[0]}' in '{token}'; use {', '.join(KEYS)}, NOOP "
                                f"or an action of this game: {', '.join(meanings)}")
            action = action_for(keys, meanings)
        actions += [action] * repeat
    if not actions:
        raise UserError("--keys is empty; give a sequence such as RIGHT*30,LEFT*30")
    return actions


# ------------------------------------------------------------------------------------------ recording


class Recorder:
    """The real game's steps, into a dataset of generate_dataset's format: one shard per recorded stretch
    (rows of a shard are consecutive steps), listed in the manifest once complete."""

    def __init__(self, root: Path, dataset_info: dict, seed: int) -> None:
        if root.exists() and any(root.iterdir()):
            raise UserError(f"--record '{root}' is not empty; choose a new directory for the recording")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--record: cannot create '{root}' ({e.strerror}); choose a writable directory") from None
        self.root, self.settings = root, EnvSettings.from_dict(dataset_info["env_settings"])
        self.manifest = Manifest.create(self.settings, seed, policy="human", shard_size=0, target=0)
        self.manifest.add_session(num_envs=1, started=self.manifest.created)
        self.rows: list[tuple] = []

    def add(self, step: Transition, episode: int) -> None:
        self.rows.append((step.obs, step.action, step.next_obs[-1:], step.done, step.reward, episode))

    def cut(self) -> int:
        """Write the stretch recorded so far as a shard and list it; returns its rows."""
        n = len(self.rows)
        if n:
            index = self.manifest.next_shard
            writer = ShardWriter(self.root, f"play{index}", n, self.settings.context_frames, self.settings.screen_size)
            for row in self.rows:
                writer.append(*row)
            entry = writer.finish()  # fsynced, then renamed into place, then listed
            promote_shard(self.root, f"play{index}", index, list(self.manifest.fields))
            self.manifest.add_shard(entry, session=0)
            self.manifest.target_steps = self.manifest.steps
            self.manifest.write(self.root)
            self.rows = []
        return n


# ------------------------------------------------------------------------------------------ the game


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
    context: torch.Tensor = field(init=False)  # (1, T, H, W) float, the model's last frames
    steps: int = field(init=False, default=0)
    starts: int = field(init=False, default=0)
    episode: int = field(init=False, default=0)
    recording: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.meanings: list[str] = self.dataset_info["action_meanings"]
        self.game = None if self.dataset is not None else Game(EnvSettings.from_dict(self.dataset_info["env_settings"]))
        self.rng = np.random.default_rng(self.seed)
        self.new_start()

    def new_start(self) -> None:
        """A new real start: a fresh episode (seed + starts) played a few random steps in, or a recorded frame."""
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
        predicted = self.model(self.context, torch.tensor([action], device=self.device)).clamp(0, 1)  # (1, 1, H, W)
        self.context = torch.cat([self.context[:, 1:], predicted], dim=1)
        self.steps += 1
        if self.game is not None:
            real = self.game.step(action)
            if self.recorder is not None and self.recording:
                self.recorder.add(real, self.episode)
            if real.done:  # the real episode ended: both start again
                if self.recorder is not None and self.recording:
                    self.recorder.cut()
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


# ------------------------------------------------------------------------------------------ window and headless


PYGAME_KEYS = {"K_UP": "UP", "K_DOWN": "DOWN", "K_LEFT": "LEFT", "K_RIGHT": "RIGHT", "K_SPACE": "FIRE"}


def run_window(dream: Dream, fps: float, scale: int, max_frames: int | None = None) -> dict[str, float]:
    """The interactive loop at a steady `fps` until Esc or the window is closed (or `max_frames`, for tests).
    Returns {"frames": shown, "fps": reached}."""
    import pygame

    pygame.display.init()  # the display only: no audio device is needed
    pygame.display.set_caption(f"{dream.dataset_info['game']} inside the world model")
    keys = {getattr(pygame, name): key for name, key in PYGAME_KEYS.items()}
    held: set[str] = set()  # tracked from key events, so that injected events (tests) count as presses too
    paused, both, quit_, frames, clock, screen = False, dream.game is not None, False, 0, pygame.time.Clock(), None
    start = time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            for event in pygame.event.get():
                quit_ |= event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE)
                if event.type == pygame.KEYDOWN:
                    held |= {keys[event.key]} if event.key in keys else set()
                    if event.key == pygame.K_n:
                        dream.new_start()
                    elif event.key == pygame.K_p:
                        paused = not paused
                    elif event.key == pygame.K_TAB:
                        both = not both
                    elif event.key == pygame.K_r:
                        dream.toggle_recording()
                elif event.type == pygame.KEYUP and event.key in keys:
                    held.discard(keys[event.key])
            if quit_:
                break
            action = action_for(held, dream.meanings)
            if not paused:
                dream.step(action)
            image = dream.frame(action, both, scale, f"{clock.get_fps():.0f} fps" + ("   PAUSED" if paused else ""))
            if screen is None or screen.get_size() != (image.shape[1], image.shape[0]):
                screen = pygame.display.set_mode((image.shape[1], image.shape[0]))
            pygame.surfarray.blit_array(screen, image.swapaxes(0, 1))
            pygame.display.flip()
            clock.tick(fps)
            frames += 1
    finally:
        pygame.quit()
    return {"frames": frames, "fps": frames / max(time.perf_counter() - start, 1e-9)}


def run_headless(dream: Dream, actions: list[int], scale: int, both: bool) -> tuple[np.ndarray, float]:
    """Play `actions` with no window; returns the frames a person would have seen (K, H, W, 3) and the steps/s."""
    frames, start = [], time.perf_counter()
    for action in actions:
        dream.step(action)
        frames.append(dream.frame(action, both, scale))
    return np.stack(frames), len(actions) / max(time.perf_counter() - start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.play", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a .pt file written by src.train")
    p.add_argument("--data_dir", default=None, help="start from frames of this dataset instead of a fresh episode")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh episodes and of the random start steps (default 0)")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second of the window (default 15)")
    p.add_argument("--scale", type=int, default=6, help="upscale factor of the 84x84 frames (default 6)")
    p.add_argument("--record", default=None, help="a new directory: R (or all of --headless) records the real game there")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--headless", action="store_true", help="no window: play --keys and write --video")
    p.add_argument("--keys", default=None, help="with --headless: e.g. RIGHT*30,LEFT*30,UP+FIRE*5")
    p.add_argument("--video", default=None, help="with --headless: the .mp4 or .gif to write")
    p.add_argument("--side_by_side", action="store_true", help="with --headless: real | dream in the video")
    args = p.parse_args(argv)
    if args.headless and not (args.keys and args.video):
        raise UserError("--headless needs --keys (e.g. RIGHT*30,LEFT*30) and --video (e.g. out.mp4)")
    if args.video and Path(args.video).suffix not in (".mp4", ".gif"):
        raise UserError(f"--video must end in .mp4 or .gif, got '{args.video}'")
    if args.fps <= 0 or args.scale < 1:
        raise UserError(f"--fps must be > 0 and --scale >= 1, got {args.fps} and {args.scale}")
    if args.record and args.data_dir:
        raise UserError("--record records the real game, which runs only from a fresh episode: drop --data_dir")

    state = read_checkpoint(args.checkpoint)
    trained_on = state["dataset"]
    device = choose_device(args.device)
    model = model_from_checkpoint(state).to(device).eval()
    dataset = None
    if args.data_dir:
        dataset = ShardedDataset(args.data_dir, verify="quick")
        if dataset.game != trained_on["game"]:
            raise UserError(f"--data_dir holds {dataset.game} data, the checkpoint is for {trained_on['game']}")
    recorder = Recorder(Path(args.record), trained_on, args.seed) if args.record else None
    actions = parse_keys(args.keys, trained_on["action_meanings"]) if args.headless else []
    dream = Dream(model, trained_on, device, args.seed, dataset, recorder)

    if args.headless:
        dream.recording = recorder is not None
        frames, rate = run_headless(dream, actions, args.scale, args.side_by_side)
        if recorder is not None:
            recorder.cut()
        path = write_video(args.video, frames, fps=round(args.fps))
        print(f"played {len(actions)} steps headless at {rate:.1f} steps/s -> {path}"
              + (f"; recorded {recorder.manifest.target_steps} real steps in {args.record}" if recorder else ""), flush=True)
        return 0
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.environ.get("SDL_VIDEODRIVER") != "dummy":
        raise UserError("no display to open a window on; run on a desktop, or use --headless --keys ... --video out.mp4")
    result = run_window(dream, args.fps, args.scale)
    if recorder is not None and dream.recording:
        recorder.cut()
    print(f"{result['frames']} frames at {result['fps']:.1f} fps" + (f"; recorded {recorder.manifest.target_steps} "
                                                                     f"real steps in {args.record}" if recorder else ""))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    run_cli(main)
