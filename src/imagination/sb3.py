"""Stable-Baselines3's VecEnv over the games inside the world model, so that SB3's learners (PPO, A2C, DQN...) train
in imagination as they train in a real VecEnv.

    from stable_baselines3 import PPO
    from src.imagination import WorldModelVectorEnv
    from src.imagination.sb3 import ImaginedVecEnv

    envs = ImaginedVecEnv(WorldModelVectorEnv.from_checkpoint("runs/<run>", num_envs=16, dataset=data))
    PPO("CnnPolicy", envs).learn(100_000)          # no VecFrameStack: an observation is already the 4-frame stack

SB3's conventions, as its DummyVecEnv keeps them: step returns (obs, rewards float32, dones, infos); a game that ended
is reset at once, its last observation in infos[i]["terminal_observation"] and infos[i]["TimeLimit.truncated"] true
when the horizon cut it rather than the model ending it; seeds (`seed`) and options (`set_options`) apply at the next
reset. The games run in one WorldModelVectorEnv (one forward pass a step) with autoreset disabled: the ended games
restart through its reset_mask. Needs the `sb3` extra (pip install -e '.[sb3]').
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from src.imagination.env import RESET_MASK, WorldModelVectorEnv


class ImaginedVecEnv(VecEnv):
    """SB3's VecEnv over `envs` (a WorldModelVectorEnv made with autoreset_mode "Disabled", or its default "NextStep",
    which this adapter switches off: it restarts ended games itself, in SB3's order)."""

    def __init__(self, envs: WorldModelVectorEnv) -> None:
        if not isinstance(envs, WorldModelVectorEnv):
            raise TypeError(f"envs must be a WorldModelVectorEnv, got {type(envs).__name__}")
        envs.autoreset_mode = AutoresetMode.DISABLED
        envs.metadata = {**envs.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.envs = envs
        self.actions: np.ndarray | None = None
        super().__init__(envs.num_envs, envs.single_observation_space, envs.single_action_space)

    def reset(self) -> np.ndarray:
        seeds = None if all(s is None for s in self._seeds) else [None if s is None else int(s) for s in self._seeds]
        options = {k: v for k, v in self._options[0].items() if k != RESET_MASK} or None
        obs, _ = self.envs.reset(seed=seeds, options=options)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, terminated, truncated, info = self.envs.step(self.actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{"end_probability": float(p)} for p in info["end_probability"]]
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs, _ = self.envs.reset(options={RESET_MASK: dones})
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.envs.close()

    # The games are one vector env: an attribute or a method is the same for each of them.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.envs, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.envs, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.envs, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        images = self.envs.render()
        return list(images) if images is not None else [None] * self.num_envs
