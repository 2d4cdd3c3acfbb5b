"""Train a next-frame world model offline on a recorded dataset.

    python -m src.train [--config config.yaml] [key=value ...]      e.g. optimizer.lr=1e-4 train.max_steps=5
    python -m src.train train.resume=runs/<run>  [key=value ...]    continue a run (or train.resume=auto)

Without --config it reads ./config.yaml if there is one, else the built-in defaults (the same values).

Writes runs/<YYYYmmdd-HHMMSS>_<game>/: metrics.csv, val_metrics.csv, images/, videos/, checkpoints/
(last.pt, best.pt), resolved_config.yaml, and wandb/ when experiment.wandb.mode is not disabled.
A resumed run continues in its own folder from the checkpoint's config, with the overrides given on top.
The work is done in src/training/ (its __init__ says which room holds what).
"""

from __future__ import annotations

from pathlib import Path

from src.training.loop import train
from src.training.resume import resume_config
from src.utils.errors import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config",
        default=None,
        help="YAML file with the settings (default: config.yaml if there is one here, "
        "else the built-in defaults, which are config.yaml's)",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides in dot notation, e.g. train.max_steps=5")
    args = p.parse_args(argv)
    config = args.config or ("config.yaml" if Path("config.yaml").is_file() else None)  # None: the built-in defaults
    train(*resume_config(config, args.overrides))
    return 0


if __name__ == "__main__":
    run_cli(main)
