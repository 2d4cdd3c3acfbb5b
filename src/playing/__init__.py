"""Playing inside the world model (`python -m src.play` is the entry point): keys.py turns the keys held into the
game's action, dream.py is the imagined game beside the real one, window.py plays it in a window or headless."""
