"""Playing a Dream: in a window at a steady frame rate (pygame), or headless from a key sequence."""

from __future__ import annotations

import time

import numpy as np

from src.playing.dream import Dream
from src.playing.keys import action_for

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
