"""Export a dataset (either layout) to a Minari dataset, the offline-RL format of the Farama Foundation (gymnasium's
and ale-py's maintainers), which `minari.load_dataset` reads.

    python -m src.dataset.export_minari data/pong ale/pong/random-v0 [--data_format hdf5] [--minari_dir DIR]

Each episode becomes a Minari episode: its observations are its frames, one 84x84 uint8 frame each (the first the
episode's first frame, then the frame after each step: steps + 1 of them, never the 4-frame stack), stored losslessly
(jpeg_encoding=False; Minari 0.5.3+ would JPEG-encode them otherwise); actions, rewards, and the end of the episode as
a termination (the recorder's done is terminated or truncated, which it does not tell apart) or, for an episode the
dataset stops inside, a truncation. The recording's game and settings go into the Minari dataset's description
(after DESCRIPTION_MARKER, as JSON), so that `src.dataset.import_minari` rebuilds the same dataset from it. Episodes
are written EPISODES_AT_ONCE at a time: memory holds those, never the dataset. Needs the `minari` extra
(`pip install -e '.[minari]'`); the Minari datasets folder is $MINARI_DATASETS_PATH or ~/.minari/datasets, or
--minari_dir.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from src.dataset.shards import ShardedDataset
from src.utils.errors import ArgumentParser, UserError, run_cli

DESCRIPTION_MARKER = "atari-world-model recording: "
EPISODES_AT_ONCE = 16


def need_minari():
    try:
        import minari
    except ImportError:
        raise UserError("Minari is not installed: pip install -e '.[minari]' (or pip install 'minari[hdf5]')") from None
    return minari


def episode_rows(data: ShardedDataset) -> Iterator[tuple[int, list[tuple[int, slice]]]]:
    """(episode id, [(shard position, rows)]) for each episode in the order it was recorded: an episode may continue
    in a later shard of its game."""
    open_rows: dict[int, list[tuple[int, slice]]] = {}
    for pos in range(len(data.shards)):
        episode, done = np.asarray(data.array(pos, "episode")), np.asarray(data.array(pos, "done"))
        cuts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        for begin, end in zip(cuts, np.r_[cuts[1:], len(episode)]):
            e = int(episode[begin])
            open_rows.setdefault(e, []).append((pos, slice(int(begin), int(end))))
            if done[end - 1]:
                yield e, open_rows.pop(e)
    yield from open_rows.items()  # the episodes the dataset stops inside


def episode_buffer(data: ShardedDataset, parts: list[tuple[int, slice]], index: int):
    from minari.data_collector import EpisodeBuffer

    first_pos, first_rows = parts[0]
    frames = [data.frames(first_pos, "obs", first_rows.start)[-1]]
    actions, rewards, dones = [], [], []
    for pos, rows in parts:
        frames += list(data.frames(pos, "next_obs", rows)[:, 0])
        actions += np.asarray(data.array(pos, "action")[rows]).tolist()
        rewards += np.asarray(data.array(pos, "reward")[rows], dtype=np.float64).tolist()
        dones += np.asarray(data.array(pos, "done")[rows]).tolist()
    ended = bool(dones[-1])
    return EpisodeBuffer(
        id=index,
        observations=frames,
        actions=actions,
        rewards=rewards,
        terminations=[False] * (len(dones) - 1) + [ended],
        truncations=[False] * (len(dones) - 1) + [not ended],
    )


def description(data: ShardedDataset) -> str:
    m = data.manifest
    return DESCRIPTION_MARKER + json.dumps(
        {"game": m.game, "env": m.env.to_dict(), "seed": m.seed, "policy": m.policy, "versions": m.versions}
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m src.dataset.export_minari", description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="the dataset to export (either layout)")
    p.add_argument("dataset_id", help="the Minari dataset id to create, e.g. ale/pong/random-v0")
    p.add_argument("--data_format", choices=("hdf5", "arrow"), default="hdf5", help="Minari's storage (default hdf5)")
    p.add_argument("--minari_dir", help="the Minari datasets folder (default $MINARI_DATASETS_PATH or ~/.minari)")
    args = p.parse_args(argv)
    if args.minari_dir:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(args.minari_dir).resolve())
    minari = need_minari()
    import gymnasium as gym

    start = time.perf_counter()
    with ShardedDataset(args.data_dir) as data:
        if args.dataset_id in minari.list_local_datasets():
            raise UserError(f"the Minari dataset '{args.dataset_id}' exists; delete it first or choose another id")
        _, h, w = data.stack
        made, steps, batch = None, 0, []
        for index, (_, parts) in enumerate(episode_rows(data)):
            batch.append(episode_buffer(data, parts, index))
            steps += len(batch[-1].actions)
            if len(batch) == EPISODES_AT_ONCE:
                made = flush(minari, gym, made, batch, args, data, (h, w))
                batch = []
        made = flush(minari, gym, made, batch, args, data, (h, w))
        if made is None:
            raise UserError(f"'{args.data_dir}' holds no episode to export")
    print(
        f"exported {made.total_episodes:,} episodes ({made.total_steps:,} steps) of {args.data_dir} to the Minari "
        f"dataset '{args.dataset_id}' ({args.data_format}, frames lossless) in {time.perf_counter() - start:.1f} s"
    )
    return 0


def flush(minari, gym, made, batch: list, args, data: ShardedDataset, frame: tuple[int, int]):
    """Create the Minari dataset with the first episodes, then add the rest to its storage."""
    if not batch:
        return made
    if made is None:
        return minari.create_dataset_from_buffers(
            args.dataset_id,
            batch,
            observation_space=gym.spaces.Box(0, 255, frame, np.uint8),
            action_space=gym.spaces.Discrete(data.num_actions),
            algorithm_name=data.manifest.policy,
            description=description(data),
            data_format=args.data_format,
            jpeg_encoding=False,
        )
    made.storage.update_episodes(batch)
    return made


if __name__ == "__main__":
    run_cli(main)
