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
from pathlib import Path

from src.dataset.recorder import Recorder
from src.dataset.shards import ShardedDataset
from src.models.checkpoint import model_config, model_from_checkpoint, read_checkpoint
from src.models.rollout import Feedback
from src.playing.dream import Dream
from src.playing.keys import parse_keys
from src.playing.window import run_headless, run_window
from src.utils.device import choose_device
from src.utils.errors import ArgumentParser, UserError, run_cli
from src.utils.video import write_video


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
    dream = Dream(model, trained_on, device, args.seed, dataset, recorder, Feedback.of(model_config(state)))

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
