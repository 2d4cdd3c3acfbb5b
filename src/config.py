"""Typed config: the schema lives here, the values in config.yaml; `load_config` merges file + overrides.

Sections that belong to one room are defined there and composed here: `model` is ModelConfig in
src/models/world_model.py, `experiment.wandb` is WandbConfig in src/utils/logging.py.

    cfg = load_config("config.yaml", ["train.max_steps=5", "optimizer.lr=1e-4"])

An unknown key, a value of the wrong type or values that disagree raise ConfigError, one line naming the key.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from src.models.diffusion import DiffusionConfig
from src.models.world_model import ModelConfig, check_model_config
from src.utils.errors import ConfigError, is_text
from src.utils.logging import WandbConfig

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainConfig",
    "WandbConfig",
    "config_from_dict",
    "load_config",
    "to_dict",
    "to_yaml",
]


@dataclass
class DataConfig:
    dir: str = "data/pong"  # a dataset written by src.dataset.generate_dataset (the README's --out_dir data/pong)
    game: str | None = None  # if set, the dataset must be of this game
    val_ratio: float = 0.1  # fraction of whole episodes held out for validation
    verify: str = "full"  # check the dataset at start: full (sizes, headers, checksums) or quick (no checksums)
    num_workers: int = 0  # DataLoader worker processes
    prefetch_factor: int | None = None  # batches each worker loads ahead; must be null when num_workers is 0
    persistent_workers: bool = False  # keep workers alive between epochs (needs num_workers > 0)
    pin_memory: bool | None = None  # page-locked host memory for faster copies to the GPU; null: on with CUDA
    on_device: bool | None = (
        None  # load the dataset into the training device's memory once; null: on with CUDA if it fits
    )
    allow_grown: bool = False  # on train.resume: go on when the dataset has grown since the checkpoint (the added
    # episodes train; validation keeps the checkpoint's episodes); any other change to the dataset is refused


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3  # peak learning rate (with train.grad_clip; 3e-4 and 2e-3 did worse: docs/evaluation.md)
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class TrainConfig:
    max_steps: int = 3000  # optimizer steps
    max_minutes: float | None = None  # stop earlier once this much wall-clock time has passed
    batch_size: int = 32
    loss: str = "huber"  # huber or mse, per pixel on frames in [0, 1]
    huber_delta: float = 1.0  # where the Huber loss turns from quadratic to linear
    changed_pixel_weight: float = 0.0  # extra loss on the pixels that differ from the last input frame; 0 = off
    worst_pixel_weight: float = 0.0  # extra loss: this times the mean loss of each frame's worst pixels; 0 = off
    worst_pixel_share: float = 0.01  # ... the share of each frame's pixels that counts as its worst
    pixel_loss_cutoff: float = 0.0  # per-pixel loss below this counts 0 and the rest less this (SimPLe); 0 = off
    flow_guide_weight: float = 0.1  # model.output=warp: the flow's coarse-to-fine guide (blurred frames moved by the
    # same flow, against the blurred targets) beside the frame loss; 0 = off
    change_sparsity: float = 0.0  # model.output=warp: this times the mean absolute change drawn after the copy, added
    # to the loss (a soft threshold: a hedge fainter than this is not drawn, what the flow can move is moved); 0 = off
    rollout_steps: list[int] = field(default_factory=lambda: [1])  # unroll length of each curriculum stage
    rollout_stage_ends: list[float] = field(default_factory=list)  # budget fraction where each stage but the last ends
    pushforward: float = 0.0  # the largest share of samples whose context holds the model's own predictions, made
    # without gradients (the pushforward trick); 0 = off
    pushforward_steps: int = 1  # predictions made (and fed back) without gradients before the trained step
    pushforward_start: float = (
        0.5  # budget fraction where the share starts to ramp up from 0 (to `pushforward` at the end)
    )
    reward_loss_weight: float = 1.0  # the event head's reward-sign cross-entropy, beside the frame loss (model.events)
    end_loss_weight: float = 1.0  # ... and its end-of-episode binary cross-entropy
    event_balance: float = 0.5  # rare rewards and ends weigh (common rate / their rate) ** this: 0 plain, 1 balanced
    event_batch_size: int = 32  # more steps per optimizer step for the event head alone, with their real next frames
    event_share: float = 0.25  # ... this share of them steps with a reward or an end (rare: the head learns from them)
    event_lr_scale: float = 3.0  # the event head's learning rate over optimizer.lr (same schedule)
    event_calibrate: bool = True  # the loss undoes the weighting's inflation: probabilities as the data's
    warmup_steps: int = 100  # linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    cpu: bool = False  # force the CPU even when CUDA is available
    precision: str = "auto"  # autocast of the training forward pass: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16
    compile: bool | None = None  # torch.compile the model for the training step; null: on with CUDA
    channels_last: bool | None = None  # channels-last memory format for the convolutions; null: per device, measured
    threads: int | None = None  # torch's CPU threads; null: torch's default (one per core)
    seed: int = 0  # one seed for the split, the weights, the sampling order
    log_every: int = 100  # steps between metrics.csv rows, console lines and image strips
    val_every_steps: int = 500  # steps between validations (and checkpoints)
    val_batches: int = 20  # batches of held-out samples per validation (fixed set)
    val_rollout_enabled: bool = True  # open-loop rollouts at validation: videos, recall and ratio at the horizon
    val_rollout_every: int = 1  # ... at every this many validations
    val_rollout_horizon: int = 30  # predicted steps per rollout video
    val_rollout_videos: int = 2  # rollouts per validation
    resume: str | None = None  # continue a run: its folder, one of its checkpoints, or auto (the newest run's last.pt)


@dataclass
class ExperimentConfig:
    name: str | None = None  # appended to the run folder's name
    runs_dir: str = "runs"  # run folders go here: <runs_dir>/<YYYYmmdd-HHMMSS>_<game>[_<name>]
    wandb: WandbConfig = field(default_factory=WandbConfig)


# The agent that learns inside a world model (python -m src.agent, src/agent/): its defaults were chosen by measuring
# on the `make demo` Pong model (docs/agent.md, "Choosing the learner").
LEARNERS = ("ppo", "actor_critic")
REWARDS = ("expected", "sign")


@dataclass
class AgentConfig:
    world_model: str | None = None  # a world-model run folder (its best.pt) or checkpoint, with an event head
    data_dir: str | None = None  # imagined games start from this dataset's frame stacks; null: the world model's
    # training dataset when it is on disk, else real resets of the game
    learner: str = "ppo"  # ppo (clipped, several epochs over each batch) or actor_critic (DIAMOND's: one step)
    num_envs: int = 64  # imagined games per batch, stepped together (one forward pass of the model per step)
    horizon: int = 15  # imagined steps per game from its real start (DIAMOND 15, SimPLe 50)
    gamma: float = 0.985  # discount per step (DIAMOND's)
    gae_lambda: float = 0.95  # lambda of the lambda-returns
    reward: str = "expected"  # expected (p(+1) - p(-1) of the reward head) or sign (its most likely sign, as DIAMOND)
    lr: float = 3.0e-4
    entropy_weight: float = 0.01  # the policy's entropy bonus
    value_weight: float = 0.5  # the critic's loss beside the policy's
    grad_clip: float = 0.5  # max global gradient norm; 0 turns clipping off
    ppo_epochs: int = 4  # learner ppo: passes over each batch
    ppo_minibatches: int = 4  # ... minibatches a pass
    ppo_clip: float = 0.2  # ... the ratio's clip range
    max_updates: int = 2000  # batches of imagined rollouts (each num_envs x horizon imagined steps)
    max_minutes: float | None = None  # also stop once this much wall-clock time has passed
    cpu: bool = False  # force the CPU even when CUDA is available
    threads: int | None = None  # torch's CPU threads; null: torch's default (one per core)
    seed: int = 0
    log_every: int = 10  # updates between metrics.csv rows and console lines
    save_every: int = 50  # updates between checkpoints (and at the end)
    resume: str | None = None  # continue an agent run: its folder or its checkpoints/last.pt


def check_agent_config(a: AgentConfig) -> None:
    checks = [
        (a.learner in LEARNERS, "agent.learner", f"must be {' or '.join(LEARNERS)}, got {a.learner!r}"),
        (a.reward in REWARDS, "agent.reward", f"must be {' or '.join(REWARDS)}, got {a.reward!r}"),
        (1 <= a.num_envs <= 65_536, "agent.num_envs", f"must be in [1, 65536], got {a.num_envs}"),
        (1 <= a.horizon <= 10_000, "agent.horizon", f"must be in [1, 10000], got {a.horizon}"),
        (0 < a.gamma <= 1, "agent.gamma", f"must be in (0, 1], got {a.gamma}"),
        (0 <= a.gae_lambda <= 1, "agent.gae_lambda", f"must be in [0, 1], got {a.gae_lambda}"),
        (a.lr > 0, "agent.lr", f"must be > 0, got {a.lr}"),
        (a.entropy_weight >= 0, "agent.entropy_weight", f"must be >= 0, got {a.entropy_weight}"),
        (a.value_weight >= 0, "agent.value_weight", f"must be >= 0, got {a.value_weight}"),
        (a.grad_clip >= 0, "agent.grad_clip", f"must be >= 0, got {a.grad_clip}"),
        (a.ppo_epochs >= 1, "agent.ppo_epochs", f"must be >= 1, got {a.ppo_epochs}"),
        (
            1 <= a.ppo_minibatches <= a.num_envs * a.horizon,
            "agent.ppo_minibatches",
            f"must be in [1, num_envs x horizon = {a.num_envs * a.horizon}], got {a.ppo_minibatches}",
        ),
        (0 < a.ppo_clip < 1, "agent.ppo_clip", f"must be in (0, 1), got {a.ppo_clip}"),
        (a.max_updates >= 1, "agent.max_updates", f"must be >= 1, got {a.max_updates}"),
        (a.max_minutes is None or a.max_minutes > 0, "agent.max_minutes", f"must be > 0 or null, got {a.max_minutes}"),
        (a.threads is None or a.threads >= 1, "agent.threads", f"must be >= 1 or null, got {a.threads}"),
        (a.log_every >= 1, "agent.log_every", f"must be >= 1, got {a.log_every}"),
        (a.save_every >= 1, "agent.save_every", f"must be >= 1, got {a.save_every}"),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key} {problem}")


# What `profile` changes, over config.yaml and under the command line. gpu: a step of the default model at batch 32 is
# ~200 small kernel launches that leave an H100 mostly idle, so the batch is 8x larger, the learning rate 6e-4 over a
# longer warm-up (chosen when batch 32 trained at 3e-4, before gradient clipping made 1e-3 the better rate there),
# the data held in GPU memory when it fits (else 6 loader workers), and validation and media at a cadence that stays
# a small share of a fast run. Chosen by reasoning, not yet measured on a GPU (docs/speed.md says how to check it
# with bench_train.py).
PROFILES: dict[str, tuple[str, ...]] = {
    "cpu": (),
    "gpu": (
        "train.batch_size=256",
        "optimizer.lr=6e-4",
        "train.warmup_steps=300",
        "train.event_batch_size=128",
        "data.num_workers=6",
        "data.prefetch_factor=4",
        "data.persistent_workers=true",
        "train.log_every=200",
        "train.val_every_steps=2000",
        "train.val_batches=8",
        "train.val_rollout_every=5",
        "agent.num_envs=1024",
    ),
}


@dataclass
class Config:
    profile: str = (
        "auto"  # a set of defaults for the machine, over this file (PROFILES): cpu, gpu, or auto (gpu with CUDA)
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        d, t, o, m = self.data, self.train, self.optimizer, self.model
        for key, value in leaf_values(
            self, ""
        ):  # before the ranges: inf passes `lr > 0` and diverges at the first step
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value}")
            if isinstance(value, str) and not is_text(value):
                raise ConfigError(
                    f"{key} must be text on one line without control characters (newlines, escapes), got {value!r}"
                )
        checks = [
            (
                self.profile in ("auto", *PROFILES),
                "profile",
                f"must be auto, {' or '.join(PROFILES)}, got {self.profile!r}",
            ),
            (0 < d.val_ratio < 1, "data.val_ratio", f"must be in (0, 1), got {d.val_ratio}"),
            (d.verify in ("quick", "full"), "data.verify", f"must be quick or full, got {d.verify!r}"),
            (d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}"),
            (
                d.num_workers > 0 or d.prefetch_factor is None,
                "data.prefetch_factor",
                "must be null when data.num_workers is 0",
            ),
            (d.num_workers > 0 or not d.persistent_workers, "data.persistent_workers", "needs data.num_workers > 0"),
            (
                d.prefetch_factor is None or d.prefetch_factor >= 1,
                "data.prefetch_factor",
                f"must be >= 1, got {d.prefetch_factor}",
            ),
            (
                not (d.on_device and d.num_workers > 0),
                "data.on_device",
                f"true is refused with data.num_workers={d.num_workers} (batches are indexed on the device: "
                "no worker loads them); "
                "set data.num_workers=0 or data.on_device=false",
            ),
            (o.name in ("adamw", "adam"), "optimizer.name", f"must be adamw or adam, got {o.name!r}"),
            (o.lr > 0, "optimizer.lr", f"must be > 0, got {o.lr}"),
            (o.weight_decay >= 0, "optimizer.weight_decay", f"must be >= 0, got {o.weight_decay}"),
            (
                len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
                "optimizer.betas",
                f"must be two values in [0, 1), got {o.betas}",
            ),
            (t.max_steps >= 1, "train.max_steps", f"must be >= 1, got {t.max_steps}"),
            (
                t.max_minutes is None or t.max_minutes > 0,
                "train.max_minutes",
                f"must be > 0 or null, got {t.max_minutes}",
            ),
            (t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}"),
            (t.loss in ("huber", "mse"), "train.loss", f"must be huber or mse, got {t.loss!r}"),
            (t.huber_delta > 0, "train.huber_delta", f"must be > 0, got {t.huber_delta}"),
            (t.changed_pixel_weight >= 0, "train.changed_pixel_weight", f"must be >= 0, got {t.changed_pixel_weight}"),
            (t.worst_pixel_weight >= 0, "train.worst_pixel_weight", f"must be >= 0, got {t.worst_pixel_weight}"),
            (0 < t.worst_pixel_share <= 1, "train.worst_pixel_share", f"must be in (0, 1], got {t.worst_pixel_share}"),
            (t.pixel_loss_cutoff >= 0, "train.pixel_loss_cutoff", f"must be >= 0, got {t.pixel_loss_cutoff}"),
            (t.flow_guide_weight >= 0, "train.flow_guide_weight", f"must be >= 0, got {t.flow_guide_weight}"),
            (t.change_sparsity >= 0, "train.change_sparsity", f"must be >= 0, got {t.change_sparsity}"),
            (
                len(t.rollout_steps) >= 1 and min(t.rollout_steps) >= 1,
                "train.rollout_steps",
                f"must be a non-empty list of unroll lengths >= 1, got {t.rollout_steps}",
            ),
            (
                len(t.rollout_stage_ends) == len(t.rollout_steps) - 1,
                "train.rollout_stage_ends",
                f"needs one entry per stage but the last ({len(t.rollout_steps) - 1} for "
                f"train.rollout_steps={t.rollout_steps}), "
                f"got {t.rollout_stage_ends}",
            ),
            (
                all(0 < e < 1 for e in t.rollout_stage_ends)
                and sorted(set(t.rollout_stage_ends)) == list(t.rollout_stage_ends),
                "train.rollout_stage_ends",
                f"must increase strictly inside (0, 1), got {t.rollout_stage_ends}",
            ),
            (
                m.name != "edm" or list(t.rollout_steps) == [1],
                "train.rollout_steps",
                f"must be [1] with model.name=edm (a diffusion model learns one step at a time), got {t.rollout_steps}",
            ),
            (0 <= t.pushforward <= 1, "train.pushforward", f"must be in [0, 1], got {t.pushforward}"),
            (t.pushforward_steps >= 1, "train.pushforward_steps", f"must be >= 1, got {t.pushforward_steps}"),
            (0 <= t.pushforward_start < 1, "train.pushforward_start", f"must be in [0, 1), got {t.pushforward_start}"),
            (
                0 <= t.reward_loss_weight <= 1000,
                "train.reward_loss_weight",
                f"must be in [0, 1000], got {t.reward_loss_weight}",
            ),
            (0 <= t.end_loss_weight <= 1000, "train.end_loss_weight", f"must be in [0, 1000], got {t.end_loss_weight}"),
            (0 <= t.event_balance <= 1, "train.event_balance", f"must be in [0, 1], got {t.event_balance}"),
            (
                0 <= t.event_batch_size <= 65_536,
                "train.event_batch_size",
                f"must be in [0, 65536], got {t.event_batch_size}",
            ),
            (0 <= t.event_share <= 1, "train.event_share", f"must be in [0, 1], got {t.event_share}"),
            (0 < t.event_lr_scale <= 100, "train.event_lr_scale", f"must be in (0, 100], got {t.event_lr_scale}"),
            (t.warmup_steps >= 0, "train.warmup_steps", f"must be >= 0, got {t.warmup_steps}"),
            (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", f"must be in [0, 1], got {t.min_lr_ratio}"),
            (t.grad_clip >= 0, "train.grad_clip", f"must be >= 0, got {t.grad_clip}"),
            (
                t.precision in ("auto", "fp32", "bf16"),
                "train.precision",
                f"must be auto, fp32 or bf16, got {t.precision!r}",
            ),
            (t.threads is None or t.threads >= 1, "train.threads", f"must be >= 1 or null, got {t.threads}"),
            (t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}"),
            (t.val_every_steps >= 1, "train.val_every_steps", f"must be >= 1, got {t.val_every_steps}"),
            (t.val_batches >= 1, "train.val_batches", f"must be >= 1, got {t.val_batches}"),
            (t.val_rollout_every >= 1, "train.val_rollout_every", f"must be >= 1, got {t.val_rollout_every}"),
            (t.val_rollout_horizon >= 1, "train.val_rollout_horizon", f"must be >= 1, got {t.val_rollout_horizon}"),
            (t.val_rollout_videos >= 1, "train.val_rollout_videos", f"must be >= 1, got {t.val_rollout_videos}"),
            (
                self.experiment.name is None
                or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.experiment.name) is not None,
                "experiment.name",
                f"must be a plain name (letters, digits, _ . -, at most 64) or null: it names the run folder, got "
                f"{self.experiment.name!r}",
            ),
        ]
        for ok, key, problem in checks:
            if not ok:
                raise ConfigError(f"{key} {problem}")
        check_model_config(m)
        check_agent_config(self.agent)


def leaf_values(value: Any, key: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every setting of a config dataclass, lists item by item (train.rollout_steps[1])."""
    if is_dataclass(value):
        return [
            leaf
            for f in fields(value)
            for leaf in leaf_values(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
        ]
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in leaf_values(v, f"{key}[{i}]")]
    return [(key, value)]


def load_config(path: str | Path | None = "config.yaml", overrides: list[str] | None = None) -> Config:
    """Defaults from the schema, then the YAML file (none when `path` is None: the schema's defaults are
    config.yaml's), then `key=value` overrides; validated."""
    if path is None:
        return merge_config(OmegaConf.create({}), overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass --config PATH or run from the repository root")
    try:
        file_cfg = OmegaConf.load(path)  # yaml.SafeLoader underneath: a !!python tag is an error, never a call
    except Exception as e:  # YAML syntax errors
        raise ConfigError(f"cannot parse the config file {path}: {first_line(e)}") from None
    return merge_config(file_cfg, overrides)


def config_from_dict(base: dict, overrides: list[str] | None = None) -> Config:
    """A saved config (a checkpoint's) with `key=value` overrides on top; validated like load_config. Its profile was
    applied when it was made and is not applied again."""
    return merge_config(OmegaConf.create(base), overrides, apply_profile=False)


def chosen_profile(profile: str, cpu: bool) -> str:
    """`profile` with auto resolved: gpu where CUDA is available and train.cpu is false, else cpu."""
    if profile != "auto":
        return profile
    return "gpu" if torch.cuda.is_available() and not cpu else "cpu"


def merge_config(base: Any, overrides: list[str] | None, apply_profile: bool = True) -> Config:
    """The schema's defaults, `base`, the profile's values (PROFILES) when `apply_profile`, then the overrides; the
    resolved profile's name is kept in the result."""
    try:
        override_cfg = OmegaConf.from_dotlist(list(overrides or []))
    except Exception as e:  # dotlist syntax errors
        raise ConfigError(f"cannot parse the overrides: {first_line(e)}") from None
    for source in (base, override_cfg):
        check_keys(source, Config, "")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), base, override_cfg)
        if apply_profile and merged.profile in ("auto", *PROFILES):  # another value is refused by Config's checks
            name = chosen_profile(merged.profile, merged.train.cpu)
            merged = OmegaConf.merge(
                OmegaConf.structured(Config),
                base,
                OmegaConf.from_dotlist(list(PROFILES[name])),
                override_cfg,
                {"profile": name},
            )
        return OmegaConf.to_object(merged)  # a real Config: __post_init__ runs here
    except ConfigError:
        raise
    except (ValidationError, ConfigKeyError, ConfigAttributeError, OmegaConfBaseException) as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key}: {first_line(e)}" if key else first_line(e)) from None


def check_keys(cfg: Any, schema: type, prefix: str) -> None:
    """Raise ConfigError for the first key of `cfg` that `schema` does not have, with a did-you-mean."""
    if not OmegaConf.is_dict(cfg):
        return
    known = {f.name: f for f in fields(schema)}
    for key in cfg.keys():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else f" Known keys here: {', '.join(known)}."
            raise ConfigError(f"unknown config key '{name}'.{hint}")
        child_type = known[key].type
        child = child_type if isinstance(child_type, type) else _dataclass_type(child_type)
        if child is not None and is_dataclass(child):
            check_keys(cfg[key], child, f"{name}.")


def _dataclass_type(annotation: Any) -> type | None:
    """Field annotations are strings under `from __future__ import annotations`; resolve ours by name."""
    return {
        c.__name__: c
        for c in (DataConfig, ModelConfig, DiffusionConfig, OptimizerConfig, TrainConfig, WandbConfig, ExperimentConfig)
    }.get(str(annotation))


def first_line(e: BaseException) -> str:
    return re.sub(r"\s+", " ", str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))
