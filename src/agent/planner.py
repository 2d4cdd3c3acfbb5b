"""Planning inside a world model: the cross-entropy method (CEM) over action sequences, each action held for
`repeat` steps, scored by the reward head's probabilities and, when an agent is given, its critic at the end.

    planner = Planner(world, PlannerSettings(decisions=3, repeat=4), critic=agent.policy)
    action = planner.act(frames, rng)          # frames (T, H, W) uint8 of the real game; the action for this step

A Pong point takes 40-48 agent steps: random sequences of single steps (8 steps deep) almost never see one. Holding
each action for `repeat` steps reaches decisions x repeat steps at the same cost per sequence, and the critic's value
at the end stands for what lies beyond. A plan is made every `repeat` real steps and its first action held as long
(the cost of planning is paid once per `repeat` real steps). Per plan: iterations x population sequences, each
decisions x repeat imagined steps, all sequences of an iteration in one batch (one forward pass a step).

A sequence's score: sum_k gamma^k E[r_k] alive_k + gamma^n alive_n V(s_n), with E[r] = p(+1) - p(-1) of the reward
head (a likely point counts for most of one; the most likely sign would call a 40% chance nothing) and alive_k the
chance the game has not ended before step k. CEM: each decision's action distribution starts uniform; the `elites`
best sequences of an iteration set the next one's (with `smoothing` of uniform kept); the best sequence seen decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from src.agent.learner import to_frames
from src.imagination.games import CheckpointWorld
from src.models.events import REWARD_SIGNS
from src.models.rollout import imagine_step
from src.utils.device import constant
from src.utils.frames import frames_to_float


@dataclass(frozen=True)
class PlannerSettings:
    decisions: int = 3  # actions per sequence, each held for `repeat` steps
    repeat: int = 4  # steps an action is held (the plan's reach is decisions x repeat imagined steps)
    population: int = 16  # sequences imagined per iteration
    iterations: int = 2  # CEM iterations (1: random shooting)
    elites: int = 4  # best sequences that set the next iteration's distribution
    smoothing: float = 0.1  # share of the uniform distribution kept in every update (no action ever ruled out)
    gamma: float = 0.985  # discount per imagined step

    def check(self) -> str | None:
        for name in ("decisions", "repeat", "population", "iterations", "elites"):
            if getattr(self, name) < 1:
                return f"--plan_{name} must be >= 1, got {getattr(self, name)}"
        if self.elites > self.population:
            return f"--plan_elites ({self.elites}) must be <= --plan_population ({self.population})"
        if not 0 <= self.smoothing <= 1:
            return f"--plan_smoothing must be in [0, 1], got {self.smoothing}"
        if not 0 < self.gamma <= 1:
            return f"--plan_gamma must be in (0, 1], got {self.gamma}"
        return None

    @property
    def imagined_steps(self) -> int:
        """Imagined steps a plan costs."""
        return self.iterations * self.population * self.decisions * self.repeat


class Planner:
    def __init__(self, world: CheckpointWorld, settings: PlannerSettings, critic: nn.Module | None = None) -> None:
        self.world, self.settings, self.critic = world, settings, critic
        self.model = world.model.eval().to(world.device)
        if critic is not None:
            self.critic = critic.eval().to(world.device)
        self.signs = constant(REWARD_SIGNS, world.device, torch.float32)
        self.held: int | None = None  # the action being held, and for how many more real steps
        self.left = 0

    def reset(self) -> None:
        """Forget the held action (a new episode)."""
        self.held, self.left = None, 0

    def act(self, frames: np.ndarray, rng: np.random.Generator) -> int:
        """The action for the real game's current frames (T, H, W) uint8: the held one, else a new plan's first."""
        if self.left == 0:
            self.held, self.left = self.plan(frames, rng), self.settings.repeat
        self.left -= 1
        return self.held

    @torch.inference_mode()
    def scores(self, frames: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """The imagined score of each sequence (P, D) of held actions from frames (T, H, W) uint8: (P,)."""
        s, device = self.settings, self.world.device
        population = len(sequences)
        context = frames_to_float(torch.from_numpy(frames).to(device))[None].expand(population, -1, -1, -1)
        actions = torch.from_numpy(np.repeat(sequences, s.repeat, axis=1)).to(device)  # (P, D * repeat)
        score = torch.zeros(population, device=device)
        alive = torch.ones(population, device=device)
        for k in range(actions.shape[1]):
            next_frame, reward_probs, end_probs = imagine_step(self.model, context, actions[:, k], self.world.feedback)
            score += s.gamma**k * alive * (reward_probs @ self.signs)
            alive = alive * (1 - end_probs)
            context = torch.cat([context[:, 1:], next_frame], dim=1)
        if self.critic is not None:
            score += s.gamma ** actions.shape[1] * alive * self.critic.value(to_frames(context)).float()
        return score.cpu().numpy()

    def plan(self, frames: np.ndarray, rng: np.random.Generator) -> int:
        """CEM over held-action sequences from frames (T, H, W) uint8: the first action of the best one found."""
        s, num_actions = self.settings, self.world.num_actions
        probs = np.full((s.decisions, num_actions), 1 / num_actions)  # (D, A)
        best_score, best_action = -np.inf, 0
        for _ in range(s.iterations):
            cumulative = probs.cumsum(-1)  # (D, A)
            draws = rng.random((s.population, s.decisions, 1))
            sequences = (draws > cumulative[None]).sum(-1).clip(0, num_actions - 1)  # (P, D) sampled per decision
            scores = self.scores(frames, sequences)
            top = np.argsort(-scores, kind="stable")[: s.elites]
            if scores[top[0]] > best_score:
                best_score, best_action = scores[top[0]], int(sequences[top[0], 0])
            counts = np.stack([np.bincount(sequences[top, d], minlength=num_actions) for d in range(s.decisions)])
            probs = (1 - s.smoothing) * counts / len(top) + s.smoothing / num_actions
        return best_action
