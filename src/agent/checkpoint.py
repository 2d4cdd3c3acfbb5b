"""An agent's checkpoint: its policy, what it was trained in, and (last.pt) what resuming it needs.

agent = read_agent("runs/<agent run>")          # the run folder or its checkpoints/last.pt
agent.policy(frames)                              # an ActorCritic on the CPU, eval mode
agent.world_model, agent.env_settings            # the world-model checkpoint it learned in, the real game
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from src.agent.policy import ActorCritic
from src.envs.atari import EnvSettings, settings_problem
from src.utils.checkpoint import load_checkpoint
from src.utils.errors import UserError

AGENT_FILE = "last.pt"
REQUIRED = ("policy", "optimizer", "update", "imagined_steps", "elapsed_s", "config", "world_model", "env_settings")


def agent_file(given: str | Path, setting: str = "--agent") -> Path:
    """The checkpoint that `given` (an agent run folder, its checkpoints/ folder or a .pt file) names."""
    path = Path(given)
    if path.is_dir():
        path = (path / "checkpoints" if (path / "checkpoints").is_dir() else path) / AGENT_FILE
    if not path.is_file():
        raise UserError(
            f"{setting} '{given}' is neither an agent checkpoint nor an agent run folder with checkpoints/"
            f"{AGENT_FILE}; train one with python -m src.agent agent.world_model=runs/<run>"
        )
    return path


@dataclass
class Agent:
    """A trained agent as read from its checkpoint."""

    policy: ActorCritic
    world_model: str  # the world-model checkpoint it was trained in
    env_settings: EnvSettings
    action_meanings: list[str]
    state: dict[str, Any]  # the whole checkpoint (optimizer, counters, config, RNG states)
    file: Path


def read_agent(given: str | Path, setting: str = "--agent") -> Agent:
    """The agent of a run folder or checkpoint, every field checked: a file that is not an agent's is one line."""
    file = agent_file(given, setting)
    state = load_checkpoint(file)
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise UserError(
            f"{setting} '{file}' is not an agent checkpoint (python -m src.agent writes them; a world model's "
            "checkpoint goes to agent.world_model)"
        )
    problem = settings_problem(state["env_settings"], "env_settings")
    if problem:
        raise UserError(f"{setting} '{file}': {problem}")
    settings = EnvSettings.from_dict(state["env_settings"])
    weights = state["policy"]
    actor = weights.get("actor.weight") if isinstance(weights, dict) else None
    if not isinstance(actor, torch.Tensor) or actor.dim() != 2:
        raise UserError(f"{setting} '{file}': its policy has no actor layer; the file is damaged")
    policy = ActorCritic(actor.shape[0], settings.context_frames, settings.screen_size)
    try:
        policy.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"{setting} '{file}': its policy does not fit the network ({str(e).splitlines()[0]})") from None
    if any(not torch.isfinite(p).all() for p in policy.parameters()):
        raise UserError(f"{setting} '{file}': its policy holds NaN or infinite weights")
    meanings = state.get("action_meanings") or [str(a) for a in range(actor.shape[0])]
    return Agent(policy.eval(), str(state["world_model"]), settings, list(meanings), state, file)
