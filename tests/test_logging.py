"""Experiment tracking: the online-login check and a real offline W&B run read back from disk.

Nothing here touches the network: HOME and the W&B config dir point at tmp_path, no key is set,
and WANDB_MODE=offline is a safety net under the explicit modes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from wandb.proto import wandb_internal_pb2

from src.utils.errors import UserError
from src.utils.logging import NullLogger, WandbConfig, WandbLogger, check_wandb, make_logger
from src.utils.video import write_video

LOGIN_MESSAGE = (
    "experiment.wandb.mode=online needs a W&B login: run `wandb login`, or set "
    "experiment.wandb.mode=offline (logs under the run folder, sync later) or disabled"
)
A_KEY = "x" * 40  # well-formed (40+ word characters), never sent anywhere


def test_check_wandb_online_without_login_raises(wandb_env):
    """Catches a run that starts online with no key (wandb would prompt or hang) instead of one clear line."""
    with pytest.raises(UserError) as e:
        check_wandb(WandbConfig(mode="online"))
    assert str(e.value) == LOGIN_MESSAGE
    assert not (wandb_env / ".netrc").exists()  # the check must not write credentials files


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_check_wandb_other_modes_need_no_login(wandb_env, mode):
    """Catches the login check also blocking offline or disabled runs."""
    check_wandb(WandbConfig(mode=mode))


def test_check_wandb_online_finds_env_key(wandb_env, monkeypatch):
    """Catches a check that ignores WANDB_API_KEY (the usual way to log in on a cluster)."""
    monkeypatch.setenv("WANDB_API_KEY", A_KEY)
    check_wandb(WandbConfig(mode="online"))


def test_check_wandb_online_finds_netrc_key(wandb_env):
    """Catches a check that ignores ~/.netrc, where `wandb login` saves the key."""
    netrc = wandb_env / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {A_KEY}\n")
    netrc.chmod(0o600)
    check_wandb(WandbConfig(mode="online"))


def test_check_wandb_online_malformed_key_is_user_error(wandb_env, monkeypatch):
    """Catches a traceback from wandb's key-format check instead of a one-line UserError."""
    monkeypatch.setenv("WANDB_API_KEY", "short")
    with pytest.raises(UserError, match="invalid"):
        check_wandb(WandbConfig(mode="online"))


def test_disabled_logger_writes_nothing(wandb_env, tmp_path):
    """Catches mode=disabled still starting W&B or creating files."""
    run_dir = tmp_path / "run"
    logger = make_logger(WandbConfig(mode="disabled"), run_dir, "demo", {"a": 1})
    assert isinstance(logger, NullLogger)
    logger.log({"train/loss": 1.0}, step=1)
    logger.log_image("train/strip", np.zeros((4, 4, 3), dtype=np.uint8), step=1)
    logger.log_video("val/rollout", tmp_path / "missing.mp4", step=1)
    logger.close()
    assert not run_dir.exists()


def test_offline_logger_writes_readable_run(wandb_env, tmp_path, capsys):
    """Catches metrics, media or config that never reach the offline run, or a run written outside run_dir."""
    run_dir = tmp_path / "runs" / "demo"
    logger = make_logger(WandbConfig(mode="offline", project="test"), run_dir, "demo", {"train": {"lr": 3e-4}})
    assert isinstance(logger, WandbLogger)
    for step in (1, 2, 3):
        logger.log({"train/loss": 1.0 / step}, step=step)
    logger.log_image("train/strip", np.full((8, 12, 3), 200, dtype=np.uint8), step=3)
    frames = np.stack([np.full((8, 8, 3), 80 * k, dtype=np.uint8) for k in range(3)])  # (K, H, W, 3)
    video = write_video(tmp_path / "rollout.gif", frames)
    logger.log_video("val/rollout", video, step=4)
    logger.close()

    (sync_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert "wandb sync" in capsys.readouterr().out
    (log_file,) = sync_dir.glob("run-*.wandb")
    records = list(read_records(log_file))
    history = history_rows(records)
    assert {step: row["train/loss"] for step, row in history.items() if "train/loss" in row} == {1: 1.0, 2: 0.5, 3: 1 / 3}
    assert history[3]["train/strip"]["_type"] == "image-file"
    assert history[4]["val/rollout"]["_type"] == "video-file"
    for key, step in (("train/strip", 3), ("val/rollout", 4)):
        assert (sync_dir / "files" / history[step][key]["path"]).is_file()
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"] == {"lr": 3e-4}


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Yield the protobuf Records of a .wandb file.

    wandb 0.31 ships no Python reader for it; the format is LevelDB's log format (32 KiB blocks,
    each record chunk behind a 7-byte header: crc32c, length, type) after a 7-byte ':W&B' file header.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a .wandb file"
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # too little left in this block for a header: zero padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def history_rows(records: list[wandb_internal_pb2.Record]) -> dict[int, dict]:
    """{step: {key: value}} from the history records; nested values (media) become dicts."""
    rows: dict[int, dict] = {}
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            target = row
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
        rows[row["_step"]] = row
    return rows
