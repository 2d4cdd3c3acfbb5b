"""data.on_device: the dataset held in the training device's memory gives the loader's batches byte for byte (order,
resume, torchrun shares), refuses with one line before copying when it does not fit, and trains exactly as the loader.
Run on the CPU, whose memory stands in for a GPU's."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from src.config import ConfigError
from src.dataset.offline_dataset import Batch
from src.training import batches
from src.training.batches import DeviceBatches, EventBatches, train_batches, training_batches
from src.training.data import open_data, starts_within
from src.utils.distributed import Ranks
from tests.conftest import tiny_config

CPU = torch.device("cpu")
FIELDS = ("frames", "actions", "targets", "rewards", "dones")


def assert_same_batches(a: list[Batch], b: list[Batch]) -> None:
    """Every field of every batch: the same dtype, shape and bytes."""
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        for name in FIELDS:
            u, v = getattr(x, name), getattr(y, name)
            assert (u.dtype, u.shape) == (v.dtype, v.shape), (i, name)
            assert u.numpy().tobytes() == v.numpy().tobytes(), (i, name)


def setup(small_dataset: Path, tmp_path: Path, k: int, *overrides: str):
    cfg = tiny_config(small_dataset, tmp_path, *overrides)
    dataset, train_rows, _ = open_data(cfg)
    return cfg, dataset, starts_within(dataset, train_rows, k)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("step", [0, 23])
def test_device_batches_are_the_loaders_byte_for_byte(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int, step: int
) -> None:
    """20 steps of 64 samples cross at least one epoch end (about 16 steps an epoch) and, with orders drawn 3 steps at
    a time, several draws; step 23 is a resume in the second epoch."""
    monkeypatch.setattr(batches, "ORDER_STEPS", 3)
    cfg, dataset, starts = setup(small_dataset, tmp_path, k, "train.batch_size=64")
    steps = 20
    assert steps * 64 > len(starts)  # an epoch end is crossed
    loader = list(itertools.islice(train_batches(dataset, starts, k, cfg, step), steps))
    device = list(itertools.islice(DeviceBatches(dataset, starts, k, cfg, step, CPU), steps))
    assert_same_batches(device, loader)
    assert device[0].targets.shape == (64, k, 84, 84) and device[0].frames.dtype == torch.uint8


def test_the_event_heads_batches_are_gathered_there_too(small_dataset: Path, tmp_path: Path) -> None:
    """With the dataset on the device, the event head's steps (rich in rewards and ends) come from its arrays: the
    same batches as read from the memory maps, from step 0 and after a resume, and for each of 2 processes."""
    cfg, dataset, starts = setup(small_dataset, tmp_path, 1)
    _, train_rows, _ = open_data(cfg)
    held = DeviceBatches(dataset, starts, 1, cfg, 0, CPU)
    for step, ranks in ((0, Ranks()), (17, Ranks()), (5, Ranks(1, 2, 1))):
        read = EventBatches(dataset, train_rows, 16, 0.25, 0, step, ranks)
        gathered = EventBatches(dataset, train_rows, 16, 0.25, 0, step, ranks, on_device=held)
        assert_same_batches(list(itertools.islice(gathered, 4)), list(itertools.islice(read, 4)))
    rich = next(gathered)
    assert (
        read.events.size and (rich.rewards.ne(0) | rich.dones).sum() >= 4
    )  # a quarter of 16: the rare steps are there


def test_each_process_reads_the_loaders_share(small_dataset: Path, tmp_path: Path) -> None:
    """Under 2 processes each reads what its loader reads, and together what one process with the global batch reads."""
    cfg, dataset, starts = setup(small_dataset, tmp_path, 2, "train.batch_size=8")
    steps, step = 40, 5
    shares = []
    for rank in range(2):
        ranks = Ranks(rank, 2, rank)
        loader = list(itertools.islice(train_batches(dataset, starts, 2, cfg, step, ranks=ranks), steps))
        device = list(itertools.islice(DeviceBatches(dataset, starts, 2, cfg, step, CPU, ranks), steps))
        assert_same_batches(device, loader)
        shares.append(device)
    whole_cfg = tiny_config(small_dataset, tmp_path, "train.batch_size=16")
    whole = list(itertools.islice(DeviceBatches(dataset, starts, 2, whole_cfg, step, CPU), steps))
    joined = [Batch(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in FIELDS)) for a, b in zip(*shares)]
    assert_same_batches(joined, whole)


@pytest.mark.parametrize("field", ["obs", "action", "done"])
def test_copy_through_a_staging_buffer(small_dataset: Path, tmp_path: Path, field: str) -> None:
    """The GPU's way in, through a small buffer (here 3 rows of frames or 1000 bytes of a column, not pinned: no GPU
    here) that is refilled chunk by chunk: every row arrives, in its dtype."""
    _, dataset, _ = setup(small_dataset, tmp_path, 1)
    source = dataset.array(1, field)
    dest = torch.from_numpy(np.zeros_like(source))
    staging = torch.empty(3 * 4 * 84 * 84 if field == "obs" else 1000, dtype=torch.uint8)
    batches.copy_rows(dest, source, staging)
    np.testing.assert_array_equal(dest.numpy(), source)


def test_to_the_device_only_makes_frames_float(small_dataset: Path, tmp_path: Path) -> None:
    """Batch.to on the device the data lives on copies nothing: the per-step tensors are the same storage."""
    cfg, dataset, starts = setup(small_dataset, tmp_path, 1)
    batch = next(DeviceBatches(dataset, starts, 1, cfg, 0, CPU))
    moved = batch.to(CPU)
    assert moved.actions.data_ptr() == batch.actions.data_ptr() and moved.dones.data_ptr() == batch.dones.data_ptr()
    assert moved.frames.dtype == torch.float32 and torch.equal(moved.frames, batch.frames.float() / 255)


def test_refused_with_one_line_before_loading_when_it_does_not_fit(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, dataset, starts = setup(small_dataset, tmp_path, 1, "data.on_device=true")
    built = []
    monkeypatch.setattr(batches, "DeviceBatches", lambda *args: built.append(args))
    monkeypatch.setattr(batches, "free_memory", lambda device: 2 << 30)  # 80% of 2 GiB, less 2 GiB: nothing
    with pytest.raises(ConfigError) as error:
        training_batches(dataset, starts, 1, cfg, 0, CPU)
    message = str(error.value)
    need = batches.device_arrays_bytes(dataset)
    assert need == len(dataset) * (5 * 84 * 84 + 13)
    assert message.startswith("data.on_device=true: the dataset's frames need 42.4 MB but cpu has 2.1 GB free")
    assert message.endswith("set data.on_device=false to read batches from disk") and "\n" not in message
    assert built == []  # refused before anything was copied


def test_auto_falls_back_to_the_loader(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """null: the loader on the CPU, silently; on CUDA when the data does not fit, with a line saying so (the free
    memory is faked, so no GPU is touched); false: the loader on CUDA too."""
    cfg, dataset, starts = setup(small_dataset, tmp_path, 1)
    assert cfg.data.on_device is None
    said: list[str] = []
    monkeypatch.setattr(batches, "DeviceBatches", lambda *args: pytest.fail("loaded onto the device"))
    loader = training_batches(dataset, starts, 1, cfg, 0, CPU, say=said.append)
    assert isinstance(loader, torch.utils.data.dataloader._BaseDataLoaderIter) and said == []
    monkeypatch.setattr(batches, "free_memory", lambda device: 2 << 30)
    cuda = torch.device("cuda:0")
    assert isinstance(
        training_batches(dataset, starts, 1, cfg, 0, cuda, say=said.append),
        torch.utils.data.dataloader._BaseDataLoaderIter,
    )
    assert said == [
        "data.on_device=null: the dataset's frames need 42.4 MB but cuda:0 has 2.1 GB free (at most 80% of it, "
        "less 2 GiB, is used for data); reading batches from disk"
    ]
    off = tiny_config(small_dataset, tmp_path, "data.on_device=false")
    monkeypatch.setattr(batches, "free_memory", lambda device: pytest.fail("asked for memory"))
    assert isinstance(
        training_batches(dataset, starts, 1, off, 0, cuda), torch.utils.data.dataloader._BaseDataLoaderIter
    )


def test_true_loads_onto_the_device_and_says_so(small_dataset: Path, tmp_path: Path) -> None:
    cfg, dataset, starts = setup(small_dataset, tmp_path, 1, "data.on_device=true")
    said: list[str] = []
    batches = training_batches(dataset, starts, 1, cfg, 0, CPU, say=said.append)
    assert isinstance(batches, DeviceBatches) and len(said) == 1
    assert said[0].startswith("data on cpu: 42.4 MB of frames loaded in ") and said[0].endswith(
        " s; batches are indexed there"
    )
    np.testing.assert_array_equal(batches.arrays["action"].numpy(), dataset.column("action"))


def test_on_device_with_loader_workers_is_refused(small_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^data.on_device true is refused with data.num_workers=2 .*set data.num_workers=0 or "
        r"data.on_device=false$",
    ):
        tiny_config(small_dataset, tmp_path, "data.on_device=true", "data.num_workers=2")


def test_training_on_the_device_matches_the_loader(small_dataset: Path, tmp_path: Path) -> None:
    """Same batches in the same order: the same validation metrics, to the last bit."""
    from src.training.loop import train

    common = ["train.max_steps=4", "train.log_every=2", "train.val_every_steps=4", "train.val_rollout_enabled=false"]
    on = train(tiny_config(small_dataset, tmp_path / "on", *common, "data.on_device=true"))
    off = train(tiny_config(small_dataset, tmp_path / "off", *common, "data.on_device=false"))
    assert "data on cpu: " in (Path(on["run_dir"]) / "train.log").read_text()
    assert "data on cpu: " not in (Path(off["run_dir"]) / "train.log").read_text()
    assert on["step"] == off["step"] == 4
    assert on["val/mse"] == off["val/mse"] and on["val/loss"] == off["val/loss"]
