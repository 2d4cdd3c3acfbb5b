"""Train an agent inside a world model: imagined games started from real frames, a policy that sees only frames.

    python -m src.agent agent.world_model=runs/<run> [agent.max_minutes=30] [key=value ...]
    python -m src.agent agent.resume=runs/<agent run> [key=value ...]        continue a killed or finished run

Settings: the `agent` section of config.yaml (--config another.yaml), overridden in dot notation. Writes
runs/<YYYYmmdd-HHMMSS>_<game>_agent[_<name>]/: metrics.csv, train.log, resolved_config.yaml, checkpoints/last.pt
and wandb/ when experiment.wandb.mode is not disabled. Score it in the real game with python -m src.agent.evaluate.
"""

from __future__ import annotations

from pathlib import Path

from src.agent.loop import agent_config, train_agent
from src.utils.errors import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML file with the settings (default: config.yaml if there is one)")
    p.add_argument("overrides", nargs="*", help="key=value overrides in dot notation, e.g. agent.max_minutes=30")
    args = p.parse_args(argv)
    config = args.config or ("config.yaml" if Path("config.yaml").is_file() else None)
    train_agent(*agent_config(config, args.overrides))
    return 0


if __name__ == "__main__":
    run_cli(main)
