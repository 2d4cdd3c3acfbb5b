"""What training reads, before its batches (src/training/batches.py): the validated dataset and its split, what a
checkpoint recognises them by, and what training measures on the training rows (the palette, EDM's sigma_data).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from src.config import Config, ConfigError
from src.dataset.offline_dataset import split_episodes
from src.dataset.shards import ShardedDataset
from src.envs.atari import resolve_game
from src.models.run import TrainedOn
from src.utils.errors import UserError


def open_data(
    cfg: Config, trained_on: TrainedOn | None = None, main: bool = True
) -> tuple[ShardedDataset, np.ndarray, np.ndarray]:
    """The validated dataset and its train/val rows; every disagreement with the config is a ConfigError. A resumed
    run passes what its checkpoint was trained on (`trained_on`): the dataset must be that one (or, with
    data.allow_grown,
    that one with episodes added), and the split is the checkpoint's. Under torchrun the main process alone hashes
    the files (data.verify=full); the others check sizes and headers."""
    if not Path(cfg.data.dir).is_dir():
        raise ConfigError(
            f"data.dir: dataset directory '{cfg.data.dir}' does not exist; {datasets_nearby(Path(cfg.data.dir))}"
        )
    try:
        dataset = ShardedDataset(cfg.data.dir, verify=cfg.data.verify if main else "quick")
    except UserError as e:
        raise ConfigError(f"data.dir: {e}") from None
    if cfg.data.game is not None and resolve_game(cfg.data.game) != dataset.game:
        raise ConfigError(
            f"data.game is {cfg.data.game} but the dataset in {cfg.data.dir} is {dataset.game}; "
            f"point data.dir at a {resolve_game(cfg.data.game)} dataset or leave data.game null"
        )
    episodes = dataset.column("episode")
    if trained_on is not None:
        check_same_data(trained_on, dataset, cfg.data.allow_grown)
    if trained_on is not None and trained_on.val_episodes is not None:
        # The first split_rows rows are the dataset the split was made on (a grown one appends shards). Its episodes
        # keep their side; added rows train, except those of a validation episode, which stay out of both sets, so
        # that validation (and best.pt's score) is measured on the same samples as before.
        split = trained_on.split_rows
        if split is None:
            split = (trained_on.train_rows or 0) + (trained_on.val_rows or 0)
        before = np.arange(len(episodes)) < split
        is_val = np.isin(episodes, np.asarray(trained_on.val_episodes, dtype=np.int64))
        train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val & before)
    else:
        try:
            train_rows, val_rows = split_episodes(episodes, cfg.data.val_ratio, cfg.train.seed)
        except ValueError as e:
            raise ConfigError(f"data.dir: {e}") from None
    if cfg.train.batch_size > len(train_rows):
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is larger than the training set ({len(train_rows)} samples)"
        )
    return dataset, train_rows, val_rows


def datasets_nearby(missing: Path, limit: int = 4) -> str:
    """What to do about a data.dir that does not exist: the datasets beside it (and under ./data) to pick from, or
    the command that records one there."""
    found = {}
    for folder in dict.fromkeys([missing.parent, Path("data")]):
        for manifest in sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []:
            try:
                m = json.loads(manifest.read_text())
                found[str(manifest.parent)] = f"{m['game']}, {m['totals']['steps']:,} steps"
            except (OSError, ValueError, KeyError, TypeError):
                continue
    record = f"python -m src.dataset.generate_dataset --game Pong --steps 300000 --out_dir {missing}"
    if not found:
        return f"record one with {record}"
    listed = "; ".join(f"{path} ({what})" for path, what in list(found.items())[:limit])
    return f"datasets here: {listed}; train on one with data.dir={next(iter(found))}, or record one with {record}"


def shard_digest(shard: dict) -> str:
    """One shard, recognised by its files' checksums (from the manifest)."""
    return hashlib.sha256(
        json.dumps({f: shard["files"][f]["xxh3_128"] for f in sorted(shard["files"])}).encode()
    ).hexdigest()[:32]


def fingerprint(dataset: ShardedDataset) -> dict:
    """A dataset recognised from its manifest alone: a fingerprint of the env settings and every shard's checksums, and
    each shard's digest (a grown dataset keeps the old ones, first)."""
    shards = [shard_digest(s) for s in dataset.shards]
    settings = dataset.manifest.env.to_dict()
    return {
        "fingerprint": hashlib.sha256(
            json.dumps({"env": settings, "shards": shards}, sort_keys=True).encode()
        ).hexdigest()[:32],
        "shards": shards,
    }


def data_identity(dataset: ShardedDataset, val_rows: np.ndarray) -> dict:
    """What a checkpoint records to recognise its dataset and split on resume: the fingerprint and the validation
    episodes."""
    return {**fingerprint(dataset), "val_episodes": np.unique(dataset.column("episode")[val_rows]).tolist()}


def check_same_data(trained_on: TrainedOn, dataset: ShardedDataset, allow_grown: bool) -> None:
    """ConfigError unless `dataset` is the one a checkpoint was trained on (`trained_on`): the same
    game and env settings, and the same shards (or, with allow_grown, those shards and more)."""
    where = f"set data.dir to the run's dataset ({trained_on.dir})"
    if trained_on.game != dataset.game:
        raise ConfigError(
            f"train.resume: the checkpoint was trained on {trained_on.game} but {dataset.root} holds {dataset.game}; "
            f"{where}"
        )
    saved, now = trained_on.env_settings, dataset.manifest.env.to_dict()
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(
                f"train.resume: {dataset.root} was recorded with {key}={now.get(key)}, the checkpoint's dataset with "
                f"{key}={saved.get(key)}; {where}"
            )
    if trained_on.shards is None:  # a checkpoint from before fingerprints: its row count is what it recorded
        if trained_on.train_rows + trained_on.val_rows != len(dataset):
            raise ConfigError(
                f"train.resume: {dataset.root} holds {len(dataset):,} transitions, the checkpoint's dataset held "
                f"{trained_on.train_rows + trained_on.val_rows:,}; {where}"
            )
        return
    identity = fingerprint(dataset)
    old, new = trained_on.shards, identity["shards"]
    if identity["fingerprint"] == trained_on.fingerprint:
        return
    if new[: len(old)] != old:
        raise ConfigError(
            f"train.resume: {dataset.root} is not the dataset the checkpoint was trained on (its shards differ); "
            f"{where}"
        )
    if not allow_grown:
        raise ConfigError(
            f"train.resume: {dataset.root} has grown since the checkpoint ({len(old)} shards then, {len(new)} now); "
            "set data.allow_grown=true to train on the added episodes (validation keeps the checkpoint's), "
            "or start a new run"
        )


def starts_within(dataset: ShardedDataset, rows: np.ndarray, k: int) -> np.ndarray:
    """Rows among `rows` where a window of k steps begins; a window stays in its start's episode, so a split by
    episode keeps it on its start's side."""
    starts = dataset.window_starts(k)
    return starts[np.isin(starts, rows)]


PALETTE_SAMPLES = 1000  # training frames counted for the palette, spread evenly over the training rows


def frame_palette(dataset: ShardedDataset, rows: np.ndarray, size: int) -> tuple[list[int], float]:
    """The `size` commonest grey levels of the training frames (each sampled row's next frame), increasing, and the
    share of the sampled pixels that they cover: model.palette, for palette feedback or output."""
    counts = np.zeros(256, dtype=np.int64)
    for i in np.linspace(0, len(rows) - 1, num=min(PALETTE_SAMPLES, len(rows))).round().astype(int):
        pos, local = dataset.locate(int(rows[i]))
        counts += np.bincount(dataset.frames(pos, "next_obs", local)[-1].ravel(), minlength=256)
    levels = np.sort(np.argsort(-counts, kind="stable")[:size])
    return levels.tolist(), float(counts[levels].sum() / counts.sum())


def diffusion_sigma_data(dataset: ShardedDataset, rows: np.ndarray, target: str) -> float:
    """The standard deviation of what a diffusion model (model.name=edm) diffuses, in its [-1, 1] space, over the next
    frames of PALETTE_SAMPLES training rows spread evenly: the next frame (target frame) or its change from the last
    context frame (target residual). model.diffusion.sigma_data when the config leaves it null."""
    total, squares, count = 0.0, 0.0, 0
    for i in np.linspace(0, len(rows) - 1, num=min(PALETTE_SAMPLES, len(rows))).round().astype(int):
        pos, local = dataset.locate(int(rows[i]))
        x = dataset.frames(pos, "next_obs", local)[-1].astype(np.float64) * 2 / 255 - 1
        if target == "residual":
            x -= dataset.frames(pos, "obs", local)[-1].astype(np.float64) * 2 / 255 - 1
        total, squares, count = total + x.sum(), squares + (x**2).sum(), count + x.size
    mean = total / count
    return float(np.sqrt(max(squares / count - mean**2, 0.0)))
