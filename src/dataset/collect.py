"""The recording loop: step a vector of games with a policy and stream each game's steps into its own shards.

Game i records exactly quotas[i] steps into a stream of shards of its own, so within a shard row i+1 is
the step after row i unless done[i], and the bytes depend only on the seed. The games run asynchronously
in C++ threads: while one batch is emulated this thread records the previous one. Full shards are fsynced
and handed to `on_shard` (which names them and lists them in the manifest) on one background thread, so
disk waits never stall the emulators.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from src.dataset.shard_writer import FramesShardWriter, ShardWriter, shard_writer
from src.envs.atari import EnvSettings, make_vector_env
from src.envs.policies import make_policy


def record(
    root: str,
    settings: EnvSettings,
    policy_name: str,
    quotas: list[int],
    shard_size: int,
    seed_key: tuple[int, ...],
    first_episode: int,
    tag: str,
    on_shard: Callable[[str, dict], None],
    on_progress: Callable[[int], None],
    layout: dict | None = None,
) -> None:
    """Record quotas[i] steps from game i (i < len(quotas)).

    seed_key seeds the games (their no-op starts) and the policy; tag names the temporary files;
    on_shard(tag, entry) runs on a background thread, one shard at a time, in the order shards fill; layout: the
    manifest's (None: the contract's layout, frames.default_layout(): the compact one).
    """
    num_envs = len(quotas)
    seeds = np.random.SeedSequence(seed_key)
    # Half the games emulate while this thread records the other half (measured best on 2 cores).
    env = make_vector_env(settings, num_envs, batch_size=num_envs // 2 if num_envs > 1 else 0)
    policy = make_policy(policy_name, int(env.single_action_space.n), num_envs, seeds.spawn(1)[0])
    left = np.array(quotas)
    fresh = np.ones(num_envs, dtype=bool)  # game's current observation starts an episode (no transition into it)
    last_obs: list[np.ndarray | None] = [None] * num_envs
    last_action = np.zeros(num_envs, dtype=np.int64)
    # Game i's k-th episode is first_episode + k * num_envs + i: unique, and independent of thread timing.
    episode = np.arange(first_episode, first_episode + num_envs) - num_envs
    writers: list[ShardWriter | FramesShardWriter | None] = [None] * num_envs
    shard_counts = [0] * num_envs
    finishing: list[Future] = []

    def finish(writer: ShardWriter | FramesShardWriter) -> None:
        on_shard(writer.tag, writer.finish())

    obs, info = env.reset(seed=int(seeds.generate_state(1)[0] >> 1))  # game i gets seed + i
    reward = np.zeros(len(obs), dtype=np.float32)
    done = np.zeros(len(obs), dtype=bool)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-finisher") as finisher:
        while True:
            ids = info["env_id"]
            actions = policy.act(obs, ids)
            recording = ~fresh[ids] & (left[ids] > 0)  # which games in this batch complete a transition
            left[ids[recording]] -= 1
            more = left.any()
            if more:  # the games step on while this thread records the batch below
                env.send(actions)
            for j, i in enumerate(ids):
                if fresh[i]:
                    episode[i] += num_envs
                elif recording[j]:
                    if writers[i] is None:
                        rows = min(shard_size, int(left[i]) + 1)  # + 1: left already counts this step
                        writers[i] = shard_writer(
                            layout,
                            root,
                            f"{tag}_e{i}_{shard_counts[i]}",
                            rows,
                            settings.context_frames,
                            settings.screen_size,
                        )
                        shard_counts[i] += 1
                    writers[i].append(last_obs[i], last_action[i], obs[j, -1:], done[j], reward[j], episode[i])
                    if writers[i].full:
                        finishing.append(finisher.submit(finish, writers[i]))
                        writers[i] = None
                fresh[i], last_obs[i], last_action[i] = done[j], obs[j], actions[j]
            on_progress(int(recording.sum()))
            for future in [f for f in finishing if f.done()]:
                future.result()  # a failed shard stops the recording here, not at the end
                finishing.remove(future)
            if not more:
                break
            obs, reward, terminated, truncated, info = env.recv()
            done = terminated | truncated
        for future in finishing:
            future.result()
    env.close()
