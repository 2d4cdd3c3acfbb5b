"""The agent's network: frames in, an action distribution and a value out; it sees what a player of the real game
sees (the 4-frame stack, uint8), nothing of the world model's insides, so the same network plays the real game.

    policy = ActorCritic(num_actions=6)
    logits, values = policy(frames)              # frames (B, T, H, W) uint8 -> (B, A), (B,)
    actions = policy.act(frames, generator)      # (B,) int64, sampled (greedy=True: the most likely)

The trunk is the Nature DQN network (Mnih et al. 2015), the one SB3's CnnPolicy and CleanRL's Atari agents use: at
84x84 about 8 MFLOPs a frame, 1/40 of the default world model's step, so acting costs little beside imagining.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ActorCritic(nn.Module):
    def __init__(self, num_actions: int, context_frames: int = 4, frame_size: int = 84, hidden: int = 512) -> None:
        super().__init__()
        self.num_actions, self.context_frames, self.frame_size = num_actions, context_frames, frame_size
        self.trunk = nn.Sequential(
            nn.Conv2d(context_frames, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = self.trunk(torch.zeros(1, context_frames, frame_size, frame_size)).shape[1]
        self.hidden = nn.Sequential(nn.Linear(width, hidden), nn.ReLU())
        self.actor = nn.Linear(hidden, num_actions)
        self.critic = nn.Linear(hidden, 1)
        for layer in self.modules():  # orthogonal weights, as PPO's reference implementations start
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(layer.weight, 2**0.5)
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.actor.weight, 0.01)  # a near-uniform first policy
        nn.init.orthogonal_(self.critic.weight, 1.0)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, T, H, W) uint8 (or float in [0, 255]) -> action logits (B, A), values (B,)."""
        x = self.hidden(self.trunk(frames.float() / 255))
        return self.actor(x), self.critic(x)[:, 0]

    @torch.no_grad()
    def act(self, frames: Tensor, generator: torch.Generator | None = None, greedy: bool = False) -> Tensor:
        """(B,) int64 actions for frames (B, T, H, W) uint8: sampled from the policy (greedy: its most likely)."""
        logits, _ = self(frames)
        if greedy:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]

    @torch.no_grad()
    def value(self, frames: Tensor) -> Tensor:
        """(B,) the critic's value of frames (B, T, H, W) uint8."""
        return self(frames)[1]
