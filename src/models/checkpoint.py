"""A training checkpoint: what it holds (built in one place), read back (older layouts upgraded), and the model
rebuilt from it alone, not from today's config.yaml.

    state = read_checkpoint("runs/<run>/checkpoints/best.pt")
    model = model_from_checkpoint(state)

What a checkpoint holds (`checkpoint_contents` writes exactly these keys):
    model       the model's state_dict
    optimizer   the optimizer's state_dict
    step        optimizer steps taken
    elapsed_s   seconds of training so far: the clock that a resumed run continues
    config      the run's whole config as a dict; the model is rebuilt from its `model` section
    dataset     what the model was trained on: src.models.run.TrainedOn as a dict (read it with TrainedOn.of(state))
    val         the validation metrics at `step`
    best_mse    the lowest validation MSE so far (best.pt holds the weights that reached it)
    rng         every RNG's state (src.utils.seed.rng_state)
    wandb_id    the W&B run a resume continues, or None
    versions    of the packages that computed it (torch, numpy, this project): a resume under others says so
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from src.envs.atari import GAME_NAME, MAX_ACTIONS, settings_problem
from src.models.run import TrainedOn
from src.models.world_model import ModelConfig, build_model, check_model_config
from src.utils.checkpoint import load_checkpoint
from src.utils.errors import MAX_TEXT, UserError, is_text
from src.utils.seed import rng_state_problem
from src.utils.versions import package_versions

REQUIRED = ("model", "config", "dataset", "step")


def checkpoint_contents(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed_s: float,
    config: dict,
    dataset: dict,
    val: dict[str, float],
    best_mse: float,
    rng: dict,
    wandb_id: str | None,
) -> dict[str, Any]:
    """The dict that a checkpoint file holds (see the module's docstring)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed_s": elapsed_s,
        "config": config,
        "dataset": dataset,
        "val": val,
        "best_mse": best_mse,
        "rng": rng,
        "wandb_id": wandb_id,
        "versions": package_versions(*VERSIONED),
    }


VERSIONED = ("torch", "numpy", "atari-world-model")  # what decides the numbers a resumed run computes


def version_changes(state: dict[str, Any]) -> list[str]:
    """'torch 2.12.0 -> 2.13.0' for each package whose version differs from the checkpoint's (none for a checkpoint that
    recorded none)."""
    saved, now = state.get("versions", {}), package_versions(*VERSIONED)
    return [
        f"{name} {saved[name]} -> {now.get(name)}"
        for name in VERSIONED
        if name in saved and saved[name] != now.get(name)
    ]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """load_checkpoint (safe: tensors and plain containers only), then every field it holds checked (a checkpoint
    is a file that may have been altered, and its config steers what is built); a checkpoint of the first layout
    (its dataset under "env", the settings under "env"."env") is upgraded in memory."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and "env" in state and "dataset" not in state and isinstance(state["env"], dict):
        dataset = dict(state.pop("env"))  # the first layout
        if "env" in dataset:
            dataset["env_settings"] = dataset.pop("env")
        state["dataset"] = dataset
    missing = [k for k in REQUIRED if k not in state] if isinstance(state, dict) else ["all"]
    if missing:
        raise UserError(f"'{path}' is not a checkpoint of this project (missing {', '.join(missing)})")
    nested = {
        "config.model": state["config"].get("model") if isinstance(state["config"], dict) else None,
        "dataset.env_settings": state["dataset"].get("env_settings") if isinstance(state["dataset"], dict) else None,
    }
    for key, value in nested.items():
        if not isinstance(value, dict):
            raise UserError(f"'{path}' is not a checkpoint of this project ({key} is missing or not a mapping)")
    upgrade(state)
    problem = checkpoint_problem(state) or contents_problem(state)
    if problem is None:
        model_config(state)  # a model this version cannot build: its own message
        problem = restated_problem(state)
    if problem:
        raise UserError(
            f"checkpoint '{path}': {problem}; the checkpoint was altered or is corrupt: restore it or train a new one"
        )
    return state


# What a `model` section saved before these settings existed means: palette feedback and the event head came later.
LEGACY_MODEL = {"feedback": "uint8", "events": False}


def upgrade(state: dict[str, Any]) -> None:
    """A checkpoint of an earlier version of the project in this version's layout, in place: the one place that knows
    them. (The first layout, with the dataset under "env", is moved before this, for the checks to read.)
    Saved before the event head: frames only (model.events false); before palette feedback: model.feedback uint8;
    before the run clock, best.pt, the validation metrics, W&B ids and package versions: none of them yet."""
    state["config"]["model"] = {**LEGACY_MODEL, **state["config"]["model"]}
    for key, value in (("elapsed_s", 0.0), ("best_mse", math.inf), ("val", {}), ("wandb_id", None), ("versions", {})):
        state.setdefault(key, value)


MAX_STEP = 2**40  # optimizer steps; far beyond any run, far below what breaks arithmetic
HEX32 = re.compile(r"[0-9a-f]{32}")
WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # W&B resumes the run of this id, under a folder named after it


def checkpoint_problem(state: dict[str, Any]) -> str | None:
    """The first field of a checkpoint (read_checkpoint's dict, REQUIRED keys present) of the wrong type or range,
    or None. What eval, play and a resume read from it is checked here, before anything is built from it."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not (
        isinstance(state["model"], dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items())
    ):
        return "model must map parameter names to tensors"
    if not (isinstance(state["step"], int) and not isinstance(state["step"], bool) and 0 <= state["step"] <= MAX_STEP):
        return f"step must be an integer in [0, {MAX_STEP}], got {repr(state['step'])[:80]}"
    if not (number(state.get("elapsed_s", 0.0)) and state.get("elapsed_s", 0.0) >= 0):
        return f"elapsed_s must be a number of seconds >= 0, got {repr(state.get('elapsed_s'))[:80]}"
    found = interpolation(state["config"], "config")
    if found:
        return (
            f"{found} is not a plain value (an interpolation or a key that is not a string): a saved config holds only "
            "values"
        )
    dataset = state["dataset"]
    meanings = dataset.get("action_meanings")
    if not (isinstance(dataset.get("game"), str) and GAME_NAME.fullmatch(dataset["game"])):
        return f"dataset.game must be an ALE game name, got {repr(dataset.get('game'))[:80]}"
    if not (isinstance(dataset.get("num_actions"), int) and 1 <= dataset["num_actions"] <= MAX_ACTIONS):
        return (
            f"dataset.num_actions must be an integer in [1, {MAX_ACTIONS}], got {repr(dataset.get('num_actions'))[:80]}"
        )
    if not (
        isinstance(meanings, list)
        and len(meanings) == dataset["num_actions"]
        and all(is_text(m, 32) and m.isalnum() for m in meanings)
    ):  # the manifest's rule: they reach --keys and the screen
        n = dataset["num_actions"]
        return f"dataset.action_meanings must be {n} action names such as NOOP, FIRE, got {repr(meanings)[:80]}"
    if "dir" in dataset and not is_text(dataset["dir"]):
        return (
            f"dataset.dir must be a path of at most {MAX_TEXT} characters without control characters, got "
            f"{repr(dataset['dir'])[:80]}"
        )
    problem = env_settings_problem(dataset["env_settings"])
    if problem:
        return f"dataset.{problem}"
    hexes = lambda v: isinstance(v, list) and all(isinstance(x, str) and HEX32.fullmatch(x) for x in v)  # noqa: E731
    for key, ok, expected in (
        ("train_rows", lambda v: is_count(v), "a count"),
        ("val_rows", lambda v: is_count(v), "a count"),
        ("split_rows", lambda v: is_count(v), "a count"),
        ("processes", lambda v: is_count(v) and v >= 1, "a count >= 1"),
        (
            "seed",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 - 1,  # eval plays with seed + 1
            f"an integer in [0, {2**63 - 2}] (the dataset's seed)",
        ),
        ("fingerprint", lambda v: isinstance(v, str) and HEX32.fullmatch(v), "32 hex digits"),
        ("shards", hexes, "a list of shard digests (32 hex digits)"),
        ("val_episodes", lambda v: isinstance(v, list) and all(is_count(e) for e in v), "a list of episode ids"),
    ):
        if key in dataset and not ok(dataset[key]):
            return f"dataset.{key} must be {expected}, got {repr(dataset[key])[:80]}"
    if dataset["env_settings"].get("game", dataset["game"]) != dataset["game"]:
        game = dataset["env_settings"]["game"]
        return f"dataset.env_settings.game {game!r} differs from dataset.game {dataset['game']!r}"
    if not number(state.get("best_mse", 0.0)) and state.get("best_mse") != math.inf:
        return f"best_mse must be a number, got {repr(state.get('best_mse'))[:80]}"
    val = state.get("val", {})
    if not (
        isinstance(val, dict)
        and all(
            isinstance(k, str) and (number(v) or (isinstance(v, float) and not math.isfinite(v)))
            for k, v in val.items()
        )
    ):
        return "val must map metric names to numbers"  # NaN is one: an event rate with nothing to count
    wandb_id = state.get("wandb_id")
    if not (wandb_id is None or (isinstance(wandb_id, str) and WANDB_ID.fullmatch(wandb_id))):
        return f"wandb_id must be null or a W&B run id (letters, digits, _ and -), got {repr(wandb_id)[:80]}"
    versions = state.get("versions", {})
    if not (isinstance(versions, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items())):
        return "versions must map package names to version strings"
    if "rng" in state:
        return rng_state_problem(state["rng"])
    return None


NON_FINITE_ALLOWED = (
    "val",
    "best_mse",
)  # an event rate with nothing to count is NaN; no validation yet is an infinite best


def contents_problem(state: dict[str, Any]) -> str | None:
    """The first value anywhere in a checkpoint that no run writes, or None: a tensor (weights, buffers, Adam's moments)
    or a number that is NaN or infinite, or a string (a key too) that is not one printable line. checkpoint_problem
    checks each field's type and range; this checks every value, so that NaN weights are not evaluated into NaN
    scores (and a summary.json that is not JSON), nor a newline or an escape from a file printed to the terminal."""
    for key, value in leaves(state, ""):
        if isinstance(value, torch.Tensor):
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                return f"{key} holds NaN or infinite values ({bad:,} of {value.numel():,})"
        elif isinstance(value, float) and not math.isfinite(value) and not key.startswith(NON_FINITE_ALLOWED):
            return f"{key} must be a finite number, got {value}"
        elif isinstance(value, str) and not is_text(value):
            return (
                f"{key} must be text on one line (at most {MAX_TEXT} characters, no control characters), got "
                f"{repr(value)[:80]}"
            )
    return None


def leaves(value: object, key: str) -> Iterator[tuple[str, object]]:
    """(key path, value) of every leaf of a checkpoint's nested dicts and lists, and of every dict key as a leaf of
    its own: model.head.levels, optimizer.state.3.exp_avg, rng.python[1][0]."""
    if isinstance(value, dict):
        for k, v in value.items():
            at = f"{key}.{k}" if key else str(k)
            if isinstance(k, str) and not is_text(k):
                yield f"{key or 'the checkpoint'}: a key", k
            yield from leaves(v, at)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from leaves(v, f"{key}[{i}]")
    else:
        yield key, value


def restated_problem(state: dict[str, Any]) -> str | None:
    """A buffer of the weights that restates a config value (the palette output's grey levels: model.palette) and
    differs from it, or None. The model is built from the config, so a buffer that disagrees would decode every
    prediction with levels other than those the config names (and load_state_dict would take it silently)."""
    trained_on = TrainedOn.of(state)
    settings = trained_on.settings
    try:
        built = build_model(model_config(state), trained_on.num_actions, settings.context_frames, settings.screen_size)
    except UserError as e:  # e.g. an edm model whose sigma_data is null: training always saves one
        return f"its model cannot be built ({e})"
    for name, module in built.named_modules():
        for buffer, setting in getattr(module, "RESTATES", {}).items():
            key = f"{name}.{buffer}" if name else buffer
            saved, expected = state["model"].get(key), getattr(module, buffer)
            if isinstance(saved, torch.Tensor) and not (
                saved.shape == expected.shape and torch.equal(saved.to(expected.dtype), expected)
            ):
                return f"model.{key} differs from config.model.{setting} {state['config']['model'][setting]}"
    return None


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def interpolation(value: object, key: str) -> str | None:
    """The key of the first string in `value` that OmegaConf would evaluate (${...}), or of a non-string key.
    A checkpoint's config is merged into the run's config on resume: `${oc.env:SECRET}` there would be resolved,
    printed and logged."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = f"{key}.{k!r}" if not isinstance(k, str) else interpolation(v, f"{key}.{k}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = interpolation(v, f"{key}[{i}]")
            if found:
                return found
    elif isinstance(value, str) and "${" in value:
        return key
    return None


MIN_SCREEN_SIZE = 8  # the smallest frame the models' down-sampling takes


def env_settings_problem(settings: dict) -> str | None:
    """What is wrong with a saved EnvSettings dict (the envs' own checks, and a frame the models can be built for)."""
    problem = settings_problem(settings, "env_settings")
    if problem is None and settings["screen_size"] < MIN_SCREEN_SIZE:
        problem = f"env_settings.screen_size must be >= {MIN_SCREEN_SIZE} for a model, got {settings['screen_size']}"
    return problem


def model_config(state: dict[str, Any]) -> ModelConfig:
    """The checkpoint's `model` section, typed and checked like config.yaml's, this version's defaults for what it
    does not name (an earlier version's layout is upgraded by read_checkpoint: `upgrade`)."""
    saved = {**LEGACY_MODEL, **state["config"]["model"]}  # a state not read by read_checkpoint too
    try:
        model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.create(saved)))
        check_model_config(model)
        if "palette" in (model.feedback, model.output) and model.palette is None:  # training fills it in before saving
            raise UserError(
                f"model.{'feedback' if model.feedback == 'palette' else 'output'} is palette but model.palette is null"
            )
    except (
        UserError,
        OmegaConfBaseException,
        ValueError,
        TypeError,
    ) as e:  # a name, key or value this version does not know
        detail = " ".join(str(e).split())[:200]
        raise UserError(
            f"the checkpoint's model cannot be built by this version of the code ({detail}); "
            "evaluate it with the version that trained it"
        ) from None
    return model


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes, weights loaded, rebuilt from its saved config."""
    trained_on = TrainedOn.of(state)
    settings = trained_on.settings
    model = build_model(model_config(state), trained_on.num_actions, settings.context_frames, settings.screen_size)
    load_weights(model, state)
    return model


def load_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """model.load_state_dict(state["model"]), with one line instead of PyTorch's list when they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1][:200]  # the first line is a title
        raise UserError(
            f"the checkpoint's weights do not fit its model '{state['config']['model']['name']}' ({detail}); "
            "the checkpoint was altered or made by another version"
        ) from None
