"""Playing a Dream: in a window at a steady frame rate (pygame), or headless from a key sequence; and how a Ctrl-C
or a SIGTERM stops either between two whole steps."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from src.playing.dream import Dream
from src.playing.keys import action_for

PYGAME_KEYS = {"K_UP": "UP", "K_DOWN": "DOWN", "K_LEFT": "LEFT", "K_RIGHT": "RIGHT", "K_SPACE": "FIRE"}


class Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM stop play cleanly: as a KeyboardInterrupt raised between two whole steps of a play
    loop, and only there.

    Inside `whole_step()` a signal waits for the block's end, so that a step, its recorded row and its video frame
    happen together or not at all, and a shard is never left half-listed. Outside the loops (`stoppable()`) it is only
    noted (`signal`): before play starts it stops play at once, and once play is over it does not cut short the
    writing of what was played. One signal raises once; the recording and the video are then finished whatever comes
    (SIGKILL still ends it, and loses at most the rows of the shard being filled).
    """

    def __init__(self) -> None:
        self.depth = 0  # of nested whole_step blocks
        self.playing = False  # inside a play loop
        self.signal: int | None = None  # the first signal received
        self.raised = False

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle SIGINT and SIGTERM this way inside the block (main thread only); the old handlers after it."""
        self.depth, self.playing, self.signal, self.raised = 0, False, None, False
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signum
            self._raise_if_due()

    def _raise_if_due(self) -> None:
        if self.signal is not None and self.playing and not self.depth and not self.raised:
            self.raised = True
            raise KeyboardInterrupt

    @contextmanager
    def stoppable(self) -> Iterator[None]:
        """A play loop: a signal raises KeyboardInterrupt in it, between whole steps (at once if one came before)."""
        self.playing = True
        try:
            self._raise_if_due()
            yield
        finally:
            self.playing = False

    @contextmanager
    def whole_step(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self._raise_if_due()

    @property
    def exit_code(self) -> int:
        """What a shell reports for a command stopped by the signal received: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.signal or signal.SIGINT)


INTERRUPTS = Interrupts()


def run_window(dream: Dream, fps: float, scale: int, max_frames: int | None = None) -> dict[str, float]:
    """The interactive loop at a steady `fps` until Esc or the window is closed (or `max_frames`, for tests).
    Returns {"frames": shown, "fps": reached}. A Ctrl-C or SIGTERM ends it between two frames, as a KeyboardInterrupt,
    after the window is closed."""
    import pygame

    pygame.display.init()  # the display only: no audio device is needed
    pygame.display.set_caption(f"{dream.trained_on.game} inside the world model")
    keys = {getattr(pygame, name): key for name, key in PYGAME_KEYS.items()}
    held: set[str] = set()  # tracked from key events, so that injected events (tests) count as presses too
    paused, both, quit_, frames, clock, screen = False, dream.game is not None, False, 0, pygame.time.Clock(), None
    start = time.perf_counter()
    try:
        with INTERRUPTS.stoppable():
            while max_frames is None or frames < max_frames:
                with INTERRUPTS.whole_step():  # keys, the step and what it records, and the picture: all or none
                    for event in pygame.event.get():
                        quit_ |= event.type == pygame.QUIT or (
                            event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
                        )
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
                    image = dream.frame(
                        action, both, scale, f"{clock.get_fps():.0f} fps" + ("   PAUSED" if paused else "")
                    )
                    if screen is None or screen.get_size() != (image.shape[1], image.shape[0]):
                        screen = pygame.display.set_mode((image.shape[1], image.shape[0]))
                    pygame.surfarray.blit_array(screen, image.swapaxes(0, 1))
                    pygame.display.flip()
                clock.tick(fps)
                frames += 1
    finally:
        pygame.quit()  # on a Ctrl-C too: the window closes before the recording is finished
    return {"frames": frames, "fps": frames / max(time.perf_counter() - start, 1e-9)}


def run_headless(dream: Dream, actions: list[int], scale: int, both: bool, show: Callable[[np.ndarray], None]) -> float:
    """Play `actions` with no window, handing each frame a person would have seen ((H, W, 3) uint8) to `show` as soon
    as it is made (a VideoWriter's append: no frame is kept here). Returns the steps/s. A Ctrl-C or SIGTERM ends it
    between two steps, as a KeyboardInterrupt: every step played has its frame shown and, if recorded, its row."""
    start = time.perf_counter()
    with INTERRUPTS.stoppable():
        for action in actions:
            with INTERRUPTS.whole_step():
                dream.step(action)
                show(dream.frame(action, both, scale))
    return len(actions) / max(time.perf_counter() - start, 1e-9)
