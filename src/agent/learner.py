"""Imagined rollouts and the updates that learn from them.

Axes: K imagined steps (the horizon), B games, T context frames, H x W pixels.

    games = Dreams(world, starts, num_envs=64, horizon=15, reward="expected")
    batch = games.rollout(policy, rng, generator)      # K steps of B games from B real starts
    stats = update(policy, optimizer, batch, cfg)      # lambda-returns, then PPO or DIAMOND's actor-critic

Every game starts from a real frame stack (a dataset's window or a real reset) and plays `horizon` steps inside the
world model: the policy acts on the frames as the real game would show them (rounded to grey levels), the model
imagines the next frame, and its event head gives the step's reward probabilities and end probability. A step's
reward is the expected sign p(+1) - p(-1) (cfg.reward "expected": a reward the head is unsure of still teaches a
little) or the most likely sign ("sign"); an end stops the return (a game's later steps count as much as the chance
it is still on). Returns are lambda-returns bootstrapped by the critic at the horizon, as DIAMOND's and Dreamer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.config import AgentConfig
from src.imagination.games import CheckpointWorld, Starts
from src.models.events import REWARD_SIGNS
from src.models.rollout import imagine_step
from src.utils.device import constant
from src.utils.frames import frames_to_float


@dataclass
class Batch:
    """K imagined steps of B games."""

    obs: Tensor  # (K + 1, B, T, H, W) uint8: what the policy saw before each step, and after the last
    actions: Tensor  # (K, B) int64
    log_probs: Tensor  # (K, B) the policy's log-probability of each action when it acted
    values: Tensor  # (K + 1, B) the critic's values when it acted (and of the last frames)
    rewards: Tensor  # (K, B) float
    continues: Tensor  # (K, B) 1 - the end probability (1 - the end's 0/1 with rewards "sign")
    weights: Tensor  # (K, B) the chance that the game is still on at step k (1 at the first)

    @property
    def steps(self) -> int:
        return self.actions.numel()


def to_frames(context: Tensor) -> Tensor:
    """(B, T, H, W) float in [0, 1] -> uint8: what a real game would show (the policy's input)."""
    return (context * 255).round_().clamp_(0, 255).to(torch.uint8)


class Dreams:
    """B games inside a world model, started from real frame stacks for each rollout."""

    def __init__(
        self, world: CheckpointWorld, starts: Starts, num_envs: int, horizon: int, reward: str = "expected"
    ) -> None:
        self.world, self.starts = world, starts
        self.model = world.model.eval().to(world.device)
        self.num_envs, self.horizon, self.reward = num_envs, horizon, reward
        self.signs = constant(REWARD_SIGNS, world.device, torch.float32)

    def start_frames(self, rng: np.random.Generator) -> Tensor:
        """(B, T, H, W) uint8 real frame stacks on the model's device, drawn from `rng`."""
        frames = np.stack([self.starts.draw(rng, self.world.num_actions) for _ in range(self.num_envs)])
        return torch.from_numpy(frames).to(self.world.device)

    def step(self, context: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One imagined step: (the next context (B, T, H, W), rewards (B,), end probabilities (B,))."""
        next_frame, reward_probs, end_probs = imagine_step(self.model, context, actions, self.world.feedback)
        if self.reward == "expected":
            rewards = reward_probs @ self.signs
        else:
            rewards = self.signs[reward_probs.argmax(-1)]
            end_probs = (end_probs > 0.5).float()
        return torch.cat([context[:, 1:], next_frame], dim=1), rewards, end_probs

    @torch.no_grad()
    def rollout(self, policy: nn.Module, rng: np.random.Generator, generator: torch.Generator) -> Batch:
        """`horizon` steps of every game from fresh real starts, the policy sampling each action."""
        frames = self.start_frames(rng)
        context = frames_to_float(frames)
        obs, actions, log_probs, values, rewards, ends = [frames], [], [], [], [], []
        for _ in range(self.horizon):
            logits, value = policy(obs[-1])
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
            context, reward, end = self.step(context, action)
            obs.append(to_frames(context))
            actions.append(action)
            log_probs.append(torch.log_softmax(logits, -1).gather(1, action[:, None])[:, 0])
            values.append(value)
            rewards.append(reward)
            ends.append(end)
        values.append(policy(obs[-1])[1])
        continues = 1 - torch.stack(ends)
        weights = torch.cat([torch.ones_like(continues[:1]), torch.cumprod(continues, 0)[:-1]])
        return Batch(
            torch.stack(obs),
            torch.stack(actions),
            torch.stack(log_probs),
            torch.stack(values),
            torch.stack(rewards),
            continues,
            weights,
        )


def lambda_returns(batch: Batch, gamma: float, lam: float) -> Tensor:
    """(K, B): G_k = r_k + gamma c_k ((1 - lam) V_{k+1} + lam G_{k+1}), G_K = V_K."""
    returns, following = torch.empty_like(batch.rewards), batch.values[-1]
    for k in reversed(range(len(batch.rewards))):
        following = batch.rewards[k] + gamma * batch.continues[k] * ((1 - lam) * batch.values[k + 1] + lam * following)
        returns[k] = following
    return returns


def update(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, cfg: AgentConfig) -> dict[str, float]:
    """Learn from one batch: cfg.learner "actor_critic" takes one gradient step over all of it (REINFORCE with the
    critic as baseline, DIAMOND's); "ppo" cfg.ppo_epochs passes of cfg.ppo_minibatches clipped steps each, with
    advantages normalised per minibatch (SB3's PPO). Returns the means of what it measured."""
    returns = lambda_returns(batch, cfg.gamma, cfg.gae_lambda)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731 (K, B, ...) -> (K * B, ...)
    obs, actions, old_log_probs = flat(batch.obs[:-1]), flat(batch.actions), flat(batch.log_probs)
    advantages, targets, weights = flat(returns - batch.values[:-1]), flat(returns), flat(batch.weights)
    n = len(actions)
    if cfg.learner == "actor_critic":
        passes, splits = 1, [torch.arange(n, device=actions.device)]
    else:
        passes, splits = cfg.ppo_epochs, None
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipped")}
    for _ in range(passes):
        order = splits or torch.randperm(n, device=actions.device).chunk(cfg.ppo_minibatches)
        for rows in order:
            logits, values = policy(obs[rows])
            log_probs_all = torch.log_softmax(logits, -1)
            log_probs = log_probs_all.gather(1, actions[rows, None])[:, 0]
            entropy = -(log_probs_all.exp() * log_probs_all).sum(-1)
            w = weights[rows]
            adv = advantages[rows]
            if cfg.learner == "actor_critic":
                ratio = torch.ones_like(log_probs)
                policy_loss = -(log_probs * adv * w).mean()
            else:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(rows) > 1 else adv
                ratio = (log_probs - old_log_probs[rows]).exp()
                surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv)
                policy_loss = -(surrogate * w).mean()
            value_loss = 0.5 * (F.mse_loss(values, targets[rows], reduction="none") * w).mean()
            loss = policy_loss + cfg.value_weight * value_loss - cfg.entropy_weight * (entropy * w).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():
                log_ratio = log_probs - old_log_probs[rows]
                stats["policy_loss"].append(policy_loss.item())
                stats["value_loss"].append(value_loss.item())
                stats["entropy"].append(entropy.mean().item())
                stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                stats["clipped"].append(((ratio - 1).abs() > cfg.ppo_clip).float().mean().item())
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["imagined_return"] = float((batch.rewards * batch.weights).sum(0).mean())
    out["reward_rate"] = float((batch.rewards.abs() * batch.weights).sum() / batch.weights.sum())
    out["end_rate"] = float(((1 - batch.continues) * batch.weights).sum() / batch.weights.sum())
    out["value"] = float(batch.values[:-1].mean())
    return out
