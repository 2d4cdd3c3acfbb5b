"""Play inside the world model: press keys and watch the model imagine the game's answer.

    python -m src.play --checkpoint runs/<run> [--fps 15] [--scale 6] [--seed 0]     # its checkpoints/best.pt
    python -m src.play --checkpoint ... --data_dir data/pong           # start from recorded frames instead
    python -m src.play --checkpoint ... --headless --keys "RIGHT*30,LEFT*30" --video out.mp4 --seed 0

Each frame is predicted from the model's own last four frames and the action of the keys held: arrows and
space (FIRE), combined as the game's action meanings name them (UPRIGHTFIRE...). From a fresh episode the real
game runs beside the dream with the same actions: Tab shows both (real | dream), and R records the real game's
steps into a dataset of src.dataset.generate_dataset's format (--record DIR), to be trained on.
Keys: arrows/space act, N new start, P pause, Tab real | dream, R record on/off, Esc quits.
The band under the picture shows the dream's score (the sum of its event head's predicted reward signs since the
start) and the real game's; when the event head says the episode ends (or the real game's ends), both start anew
as N does, "dream over: score X" showing for a moment (docs/play.md).

--record DIR writes as it goes (a shard every 256 rows and at the end of every stretch), holds a lock on DIR, and
continues the recording already in DIR (a play recording of the same game and settings: a new session, episode ids
after the recorded ones), so that a session stopped by Ctrl-C, SIGTERM or a kill is taken up by running the same
command again; a DIR holding anything else is refused. Ctrl-C or SIGTERM stops between two steps: the rows recorded
and (headless) the video so far are written, and a line says what was played and recorded (exit code 130 or 143).
A kill (SIGKILL) loses at most the last 255 rows and the video.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from contextlib import nullcontext
from pathlib import Path

from src.dataset.recorder import Recorder
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint
from src.models.rollout import Feedback
from src.models.run import TrainedOn, find_checkpoint
from src.playing.dream import Dream
from src.playing.keys import parse_keys
from src.playing.window import INTERRUPTS, run_headless, run_window
from src.utils.device import choose_device
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.io import check_apart, check_outside_datasets, check_writable
from src.utils.video import GIF_FPS, GIF_MAX_FRAMES, VideoWriter

MAX_SCALE = 16  # 1344x1344 pixels a panel
MAX_FPS = 240.0
MAX_SEED = 2**31 - 1  # the emulator's seed is a C int


def parse_args(argv: list[str] | None) -> Namespace:
    p = ArgumentParser(prog="python -m src.play", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder written by src.train (its checkpoints/best.pt, else last.pt) or a .pt file",
    )
    p.add_argument("--data_dir", default=None, help="start from frames of this dataset instead of a fresh episode")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the fresh episodes and of the random start steps (default 0)"
    )
    p.add_argument(
        "--fps",
        type=float,
        default=15.0,
        help=f"frames per second of the window and the video (default 15, at most {MAX_FPS:g})",
    )
    p.add_argument(
        "--scale", type=int, default=6, help=f"upscale factor of the 84x84 frames (default 6, at most {MAX_SCALE})"
    )
    p.add_argument(
        "--record",
        default=None,
        help="R (or all of --headless) records the real game into this directory: "
        "a new one, or a recording of the same game to continue",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--headless", action="store_true", help="no window: play --keys and write --video")
    p.add_argument("--keys", default=None, help="with --headless: e.g. RIGHT*30,LEFT*30,UP+FIRE*5")
    p.add_argument("--video", default=None, help="with --headless: the .mp4 or .gif to write")
    p.add_argument("--side_by_side", action="store_true", help="with --headless: real | dream in the video")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args: Namespace) -> None:
    """Every flag on its own and with the others, before the checkpoint is read."""
    if args.headless and not (args.keys and args.video):
        raise UserError("--headless needs --keys (e.g. RIGHT*30,LEFT*30) and --video (e.g. out.mp4)")
    if args.video and Path(args.video).suffix not in (".mp4", ".gif"):
        raise UserError(f"--video must end in .mp4 or .gif, got '{args.video}'")
    if args.video and not Path(args.video).absolute().parent.is_dir():
        raise UserError(f"--video: the folder of '{args.video}' does not exist; create it or choose another path")
    if args.video and Path(args.video).is_dir():
        raise UserError(f"--video '{args.video}' is a folder; name a file in it, e.g. {Path(args.video) / 'play.mp4'}")
    if not 0 < args.fps <= MAX_FPS:
        raise UserError(f"--fps must be in (0, {MAX_FPS:g}], got {args.fps:g}")
    if args.video and Path(args.video).suffix == ".gif" and not GIF_FPS[0] <= args.fps <= GIF_FPS[1]:
        raise UserError(
            f"--fps {args.fps:g}: a .gif plays {GIF_FPS[0]:.4f} to {GIF_FPS[1]:g} frames per second (it holds each "
            "frame's delay in hundredths of a second, 2 to 65535); write an .mp4, or choose an --fps in that range"
        )
    if not 1 <= args.scale <= MAX_SCALE:
        raise UserError(f"--scale must be in [1, {MAX_SCALE}], got {args.scale}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    if args.record and args.data_dir:
        raise UserError("--record records the real game, which runs only from a fresh episode: drop --data_dir")
    if args.video:  # the video is written after the game: everything about its place is checked before it
        check_writable(Path(args.video).absolute().parent, "--video")
        check_apart(args.video, "--video", {"--record": args.record, "--data_dir": args.data_dir}, both_ways=False)
        check_outside_datasets(args.video, "--video", strict=True)
    if args.record:
        check_outside_datasets(args.record, "--record", strict=True)  # a recording continued is a dataset itself


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = read_checkpoint(find_checkpoint(args.checkpoint, "weights"))
    trained_on = TrainedOn.of(state)
    device = choose_device(args.device)  # a wrong --device is one line here, before any folder is made
    actions = parse_keys(args.keys, trained_on.action_meanings) if args.headless else []
    if args.video and Path(args.video).suffix == ".gif" and len(actions) > GIF_MAX_FRAMES:
        raise UserError(
            f"--video: a .gif holds at most {GIF_MAX_FRAMES} frames, --keys plays {len(actions)} steps; write an .mp4"
        )
    dataset = None
    if args.data_dir:
        dataset = ShardedDataset(args.data_dir, verify="quick")
        if dataset.game != trained_on.game:
            raise UserError(f"--data_dir holds {dataset.game} data, the checkpoint is for {trained_on.game}")
    if not args.headless and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("SDL_VIDEODRIVER") == "dummy"
    ):
        raise UserError(
            "no display to open a window on; run on a desktop, or use --headless --keys ... --video out.mp4"
        )
    model = model_from_checkpoint(state).to(device).eval()  # weights that do not fit: one line, before --record is made
    feedback = Feedback.of(model_config(state))

    with (
        INTERRUPTS.installed(),
        Recorder(Path(args.record), trained_on.settings, args.seed) if args.record else nullcontext() as recorder,
    ):
        if recorder is not None and recorder.continued:
            print(f"continuing the recording in {args.record} ({recorder.manifest.steps} steps so far)", flush=True)
        dream = Dream(model, trained_on, device, args.seed, dataset, recorder, feedback)
        dream.recording = args.headless and recorder is not None  # headless: the whole sequence is recorded
        try:
            line = play_headless(dream, actions, args) if args.headless else play_window(dream, args)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM between two steps of the window: what was played is kept
            line = f"played {dream.played} steps"
        if recorder is not None:
            recorder.cut()  # the rows since the last shard
            line += f"; {recorder.summary()}"
    print(("interrupted: " if INTERRUPTS.signal else "") + line, flush=True)
    return INTERRUPTS.exit_code if INTERRUPTS.signal else 0


def play_headless(dream: Dream, actions: list[int], args: Namespace) -> str:
    """Play `actions`, each frame streamed into --video as it is made. After a Ctrl-C or SIGTERM the video so far is
    finished and kept (it ends where play stopped, one frame per step played)."""
    start = time.perf_counter()
    with VideoWriter(args.video, args.fps) as video:
        try:
            run_headless(dream, actions, args.scale, args.side_by_side, video.append)
        except KeyboardInterrupt:
            pass
    rate = dream.played / max(time.perf_counter() - start, 1e-9)
    return (
        f"played {dream.played} steps headless at {rate:.1f} steps/s -> {video.written or 'no video (no step played)'}"
    )


def play_window(dream: Dream, args: Namespace) -> str:
    result = run_window(dream, args.fps, args.scale)
    return f"{result['frames']} frames at {result['fps']:.1f} fps"


if __name__ == "__main__":
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    run_cli(main)
