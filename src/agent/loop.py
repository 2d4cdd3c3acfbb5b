"""The training of an agent inside a world model, start to end: config, run folder, rollouts and updates, metrics,
W&B, checkpoints and resume.

    cfg, state = agent_config("config.yaml", ["agent.world_model=runs/<run>", "agent.max_minutes=30"])
    run_dir = train_agent(cfg, state)          # runs/<YYYYmmdd-HHMMSS>_<game>_agent[_<name>]/
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from src.agent.checkpoint import AGENT_FILE, agent_file, read_agent
from src.agent.learner import Dreams, update
from src.agent.policy import ActorCritic
from src.config import Config, ConfigError, config_from_dict, load_config, to_dict, to_yaml
from src.dataset.shards import ShardedDataset
from src.imagination.games import CheckpointWorld, Starts
from src.models.run import find_checkpoint
from src.training.outputs import Console, CsvLog
from src.utils.checkpoint import save_checkpoint
from src.utils.console import teed_stdout
from src.utils.device import choose_device
from src.utils.io import atomic_write_bytes, check_writable, create_timestamped_dir, hold_lock
from src.utils.logging import check_wandb, make_logger
from src.utils.seed import rng_state, seed_everything, set_rng_state

COLUMNS = [
    "update",
    "imagined_steps",
    "imagined_return",
    "reward_rate",
    "end_rate",
    "value",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clipped",
    "imagined_steps_per_s",
    "elapsed_s",
]


def agent_config(config_path: str | None, overrides: list[str]) -> tuple[Config, dict | None]:
    """The config of `python -m src.agent ...` and the checkpoint it continues (agent.resume): the checkpoint's own
    config with the command line's overrides on top, or config.yaml with the overrides and None."""
    cfg = load_config(config_path, overrides)
    if cfg.agent.resume is None:
        return cfg, None
    file = agent_file(cfg.agent.resume, "agent.resume")
    state = read_agent(file, "agent.resume").state
    cfg = config_from_dict(state["config"], [*overrides, f"agent.resume={file}"])
    if state["update"] >= cfg.agent.max_updates:
        raise ConfigError(
            f"agent.resume: {file} is at update {state['update']}, agent.max_updates is {cfg.agent.max_updates}; "
            "raise agent.max_updates to train on"
        )
    if cfg.agent.max_minutes is not None and state["elapsed_s"] >= 60 * cfg.agent.max_minutes:
        raise ConfigError(
            f"agent.resume: {file} has trained {state['elapsed_s'] / 60:.1f} minutes, agent.max_minutes is "
            f"{cfg.agent.max_minutes:g}; raise agent.max_minutes to train on"
        )
    return cfg, state


def open_starts(cfg: Config, world: CheckpointWorld, world_file: Path, say) -> Starts:  # noqa: ANN001 (str -> None)
    """Where the imagined games start: agent.data_dir, else the world model's training dataset when it is on disk,
    else real resets of the game."""
    data_dir = cfg.agent.data_dir
    if data_dir is None:
        trained_on = torch.load(world_file, map_location="cpu", weights_only=True)["config"]["data"]["dir"]
        data_dir = trained_on if Path(trained_on).is_dir() else None
    if data_dir is None:
        say(f"starts: real resets of {world.env_settings.game} (the world model's dataset is not on disk)")
        return Starts(None, world.env_settings)
    dataset = ShardedDataset(data_dir, verify="quick")
    game = dataset.manifest.env
    if (game.game, game.context_frames, game.screen_size) != (
        world.env_settings.game,
        world.env_settings.context_frames,
        world.env_settings.screen_size,
    ) or dataset.num_actions != world.num_actions:
        raise ConfigError(
            f"agent.data_dir: '{data_dir}' holds {game.game} ({dataset.num_actions} actions, {game.context_frames} "
            f"frames of {game.screen_size}x{game.screen_size}), the world model plays {world.env_settings.game} "
            f"({world.num_actions} actions); give a dataset of the world model's game"
        )
    say(f"starts: frame stacks of {data_dir} ({len(dataset.window_starts(1)):,} windows)")
    return Starts(dataset, world.env_settings)


def train_agent(cfg: Config, resume: dict | None = None) -> Path:
    """Train (or continue) an agent; returns its run folder."""
    console = Console()
    with teed_stdout() as console.tee:
        return _train(cfg, resume, console)


def _train(cfg: Config, resume: dict | None, console: Console) -> Path:
    a, say = cfg.agent, console.say
    if a.world_model is None and resume is None:
        raise ConfigError(
            "agent.world_model is required: a world-model run folder or checkpoint with an event head "
            "(python -m src.agent agent.world_model=runs/<run>)"
        )
    check_wandb(cfg.experiment.wandb)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = choose_device(None, cpu=a.cpu)
    world_file = find_checkpoint(resume["world_model"] if resume else a.world_model, "weights", "agent.world_model")
    world = CheckpointWorld.load(world_file, device)
    game = world.env_settings.game
    starts = open_starts(cfg, world, world_file, say)
    if resume is None:
        check_writable(cfg.experiment.runs_dir, "experiment.runs_dir", ConfigError)
        suffix = f"{game}_agent" + (f"_{cfg.experiment.name}" if cfg.experiment.name else "")
        run_dir = create_timestamped_dir(cfg.experiment.runs_dir, suffix, ("checkpoints",), "experiment.runs_dir")
    else:
        run_dir = Path(a.resume).parent.parent
    lock = hold_lock(
        run_dir / ".lock",
        "agent.resume: another process (pid {pid}) is writing to '{folder}'; wait for it to end or stop it",
        "cannot write to the run folder '{folder}' ({error}); fix its permissions",
        ConfigError,
    )
    console.open(run_dir)
    atomic_write_bytes(run_dir / "resolved_config.yaml", to_yaml(cfg).encode())

    seed_everything(a.seed)
    rng = np.random.default_rng(a.seed)
    generator = torch.Generator(device=device).manual_seed(a.seed)
    policy = ActorCritic(world.num_actions, world.env_settings.context_frames, world.env_settings.screen_size)
    policy.to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=a.lr, eps=1e-5)
    done, imagined, elapsed = 0, 0, 0.0
    if resume is not None:
        policy.load_state_dict(resume["policy"])
        optimizer.load_state_dict(resume["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = a.lr
        done, imagined, elapsed = resume["update"], resume["imagined_steps"], resume["elapsed_s"]
        set_rng_state(resume["rng"])
        rng.bit_generator.state = resume["numpy_generator"]
        generator.set_state(resume["torch_generator"].to("cpu") if device.type == "cpu" else resume["torch_generator"])
        say(f"resuming {run_dir} at update {done} ({imagined:,} imagined steps)")
    dreams = Dreams(world, starts, a.num_envs, a.horizon, a.reward)
    logger = make_logger(
        cfg.experiment.wandb,
        run_dir,
        run_dir.name,
        to_dict(cfg),
        run_id=resume.get("wandb_id") if resume else None,
        job_type="agent",
        say=say,
    )
    csv = CsvLog(run_dir / "metrics.csv", COLUMNS, done if resume else None)
    say(
        f"agent: {a.learner} in {world_file} ({game}, {world.num_actions} actions) on {device}: {a.num_envs} games x "
        f"{a.horizon} steps a batch, up to {a.max_updates} batches"
        + (f" or {a.max_minutes:g} minutes" if a.max_minutes else "")
    )

    def save() -> None:
        state = {
            "policy": policy.state_dict(),
            "optimizer": optimizer.state_dict(),
            "update": done,
            "imagined_steps": imagined,
            "elapsed_s": elapsed,
            "config": to_dict(cfg),
            "world_model": str(world_file),
            "env_settings": world.env_settings.to_dict(),
            "action_meanings": world.action_meanings,
            "rng": rng_state(),
            "numpy_generator": rng.bit_generator.state,
            "torch_generator": generator.get_state(),
            "wandb_id": getattr(logger, "run_id", None),
        }
        save_checkpoint(run_dir / "checkpoints" / AGENT_FILE, state)

    bar = console.progress(a.max_updates, done)
    started, since_log, steps_since = time.perf_counter() - elapsed, time.perf_counter(), 0
    window: list[dict[str, float]] = []  # the stats of the updates since the last row, averaged into it
    try:
        with contextlib.closing(csv), contextlib.closing(lock):
            while done < a.max_updates:
                policy.eval()
                batch = dreams.rollout(policy, rng, generator)
                policy.train()
                window.append(update(policy, optimizer, batch, a))
                done, imagined, steps_since = done + 1, imagined + batch.steps, steps_since + batch.steps
                elapsed = time.perf_counter() - started
                out_of_time = a.max_minutes is not None and elapsed >= 60 * a.max_minutes
                last = done == a.max_updates or out_of_time
                bar.update()
                if done % a.log_every == 0 or last:
                    now = time.perf_counter()
                    stats = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    window = []
                    row = {
                        "update": done,
                        "imagined_steps": imagined,
                        **stats,
                        "imagined_steps_per_s": steps_since / (now - since_log),
                        "elapsed_s": elapsed,
                    }
                    since_log, steps_since = now, 0
                    csv.write(row)
                    logger.log({f"agent/{k}": v for k, v in row.items() if k != "update"}, done)
                    say(
                        f"update {done}/{a.max_updates} | imagined return {stats['imagined_return']:+.3f} | "
                        f"entropy {stats['entropy']:.3f} | value {stats['value']:+.3f} | "
                        f"{row['imagined_steps_per_s']:.0f} imagined steps/s | {elapsed / 60:.1f} min"
                    )
                if done % a.save_every == 0 or last:
                    save()
                if out_of_time:
                    say(f"stopping at update {done}: agent.max_minutes={a.max_minutes:g} reached")
                    break
    finally:
        console.close()
        logger.close()
        starts.close()
    say(
        f"done: {done} updates, {imagined:,} imagined steps in {elapsed / 60:.1f} min; run folder {run_dir}\n"
        f"score it in the real game: python -m src.agent.evaluate --agent {run_dir}"
    )
    return run_dir
