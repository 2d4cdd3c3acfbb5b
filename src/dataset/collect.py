"""One collection worker: steps its own environment with the policy and fills its own shards.

Each worker's shards hold consecutive steps of its environment, so row i+1 follows row i unless done[i].
Workers report to the parent through a queue; the parent names finished shards and owns the manifest.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized

import numpy as np

from src.dataset.atari import EnvSettings, make_env
from src.dataset.policies import make_policy
from src.dataset.shards import ShardWriter

PROGRESS_EVERY = 250  # steps between progress messages (also how often a worker checks its parent)


@dataclass(frozen=True)
class WorkerJob:
    worker: int
    root: str
    settings: EnvSettings
    policy: str
    steps: int  # this worker's share of the steps still to record
    shard_size: int
    seed_key: tuple[int, int, int]  # (seed, session, worker): seeds this worker's no-ops and policy
    tag: str  # names this worker's temporary files: unique per session and worker


def next_episode(counter: Synchronized) -> int:
    with counter.get_lock():
        counter.value += 1
        return counter.value - 1


def collect(job: WorkerJob, queue: Queue, episode_counter: Synchronized, parent_pid: int) -> None:
    """Record job.steps transitions; messages: ("progress", n), ("shard", tag, entry), ("done",), ("error", text)."""
    try:
        _collect(job, queue, episode_counter, parent_pid)
        queue.put((job.worker, "done"))
    except Exception:
        queue.put((job.worker, "error", traceback.format_exc()))


def _collect(job: WorkerJob, queue: Queue, episode_counter: Synchronized, parent_pid: int) -> None:
    seeds = np.random.SeedSequence(job.seed_key)
    env = make_env(job.settings)
    policy = make_policy(job.policy, int(env.action_space.n), np.random.default_rng(seeds.spawn(1)[0]))
    obs, _ = env.reset(seed=int(seeds.generate_state(1)[0]))
    episode = next_episode(episode_counter)
    s = job.settings
    remaining, shard_seq, unreported = job.steps, 0, 0
    while remaining > 0:
        rows = min(job.shard_size, remaining)
        tag = f"{job.tag}_{shard_seq}"
        writer = ShardWriter(job.root, tag, rows, s.context_frames, s.screen_size)
        for _ in range(rows):
            action = policy.act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            writer.append(obs=obs, action=action, next_obs=next_obs[-1:], done=done, reward=reward, episode=episode)
            if done:
                obs, _ = env.reset()
                episode = next_episode(episode_counter)
            else:
                obs = next_obs
            unreported += 1
            if unreported == PROGRESS_EVERY:
                if os.getppid() != parent_pid:  # the parent was killed: stop instead of writing on as an orphan
                    os._exit(1)
                queue.put((job.worker, "progress", unreported))
                unreported = 0
        queue.put((job.worker, "progress", unreported))
        unreported = 0
        queue.put((job.worker, "shard", tag, writer.finish()))
        remaining -= rows
        shard_seq += 1
    env.close()
