"""Nothing read from a manifest is trusted: every field is checked for type, range and agreement with the data, and
a bad one gives one line and exit 2 (never a traceback, never a path built from it)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from src.dataset import inspect_dataset
from src.dataset.manifest import DatasetError, Manifest
from src.dataset.shards import ShardedDataset, shard_path
from src.utils.errors import run_cli
from tests.conftest import INSPECT, error_line, run

JUNK = [
    None,
    "x",
    "",
    [],
    {},
    True,
    False,
    1.5,
    float("nan"),
    float("inf"),
    -1,
    0,
    10**30,
    2**63,
    -(2**63),
    [[[]]],
    {"a": {"b": [1]}},
    "../../escape",
    [1, 2],
    ["x"] * 3,
]


def read(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def write(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def inspect(root: Path) -> tuple[int, str]:
    """inspect_dataset as `python -m` runs it (in this process): exit code and stderr. Any other exception fails the
    test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_:
        run_cli(inspect_dataset.main, [str(root), "--verify", "quick"])
    return exit_.value.code, err.getvalue()


def paths(manifest: dict) -> list[tuple]:
    """Every key of the manifest worth mutating: top level, env, fields, the first session and shard and their files."""
    found = [(k,) for k in manifest]
    found += [("env", k) for k in manifest["env"]] + [("fields", "obs", "shape"), ("fields", "action", "dtype")]
    found += [("sessions", 0, k) for k in manifest["sessions"][0]] + [("totals", k) for k in manifest["totals"]]
    found += [("shards", 0, k) for k in manifest["shards"][0]] + [
        ("shards", 0, "files", "obs", k) for k in ("bytes", "xxh3_128")
    ]
    return found + [("shards", 0, "episodes", 0), ("action_meanings", 0), ("part",), ("merged_from",)]


def mutated(manifest: dict, path: tuple, value: object) -> dict:
    """A copy of `manifest` with the entry at `path` set to `value` (the string "<delete>": removed)."""
    out = copy.deepcopy(manifest)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value == "<delete>":
        node.pop(path[-1], None) if isinstance(node, dict) else node.pop(path[-1])
    else:
        node[path[-1]] = value
    return out


def test_no_mutation_of_any_field_gives_a_traceback(dataset_copy: Path) -> None:
    """Catches a manifest field that reaches code unchecked: every junk value in every field is either harmless
    (exit 0) or one line and exit 2."""
    original = read(dataset_copy)
    refused = 0
    for path in paths(original):
        for value in [*JUNK, "<delete>"]:
            write(dataset_copy, mutated(original, path, value))
            code, err = inspect(dataset_copy)
            assert code in (0, 2), (path, value, err)
            if code == 2:
                refused += 1
                assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (path, value, err)
    assert refused > 500  # nearly every mutation is refused


def test_a_game_name_that_is_a_path_is_refused(dataset_copy: Path) -> None:
    """Catches `game` reaching a run folder's name: x/../../../escape would put the run outside runs_dir."""
    manifest = read(dataset_copy)
    for game in ("x/../../../escape", "Pong\nerror: forged", ""):
        write(dataset_copy, {**manifest, "game": game})
        with pytest.raises(DatasetError, match="game must be the same as env.game"):
            Manifest.read(dataset_copy)
        both = {**manifest, "game": game, "env": {**manifest["env"], "game": game}}
        write(dataset_copy, both)
        with pytest.raises(DatasetError, match=r"env.game must be an ALE game name \(letters and digits"):
            Manifest.read(dataset_copy)
    write(dataset_copy, {**manifest, "game": "Breakout"})  # a plain name, but not the env's game
    line = error_line(run([*INSPECT, str(dataset_copy)]))
    assert line.endswith(
        "game must be the same as env.game (Pong), got 'Breakout'; the manifest is corrupt: regenerate the dataset"
    )


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("seed",), -1, "seed must be an integer in [0, 9223372036854775807], got -1"),
        (("part",), [8388608, 8388608], "part must be null or [K, N] with 1 <= K <= N <= 4096"),
        (("part",), [3, 2], "part must be null or [K, N]"),
        (("policy",), "greedy", "policy must be one of random, human, dqn-replay, minari, got 'greedy'"),
        (("shard_size",), 0, "shard_size must be an integer in [1, 1000000] (0 for a recording made by hand), got 0"),
        (("num_actions",), 19, "num_actions must be an integer in [1, 18], got 19"),
        (("target_steps",), 2**40, "target_steps must be an integer in [0, 1099511627775]"),
        (("fields", "obs", "shape"), [4, 84, 85], "fields must be the fields of 4 frames of 84x84"),
        (("env", "screen_size"), 10**6, "env.screen_size must be in [1, 1024], got 1000000"),
        (("env", "context_frames"), 65, "env.context_frames must be in [1, 64], got 65"),
        (("env", "max_episode_steps"), 2**63, "env.max_episode_steps must be in [1, 10000000]"),
        (
            ("env", "repeat_action_probability"),
            float("nan"),
            "env.repeat_action_probability must be in [0, 1], got nan",
        ),
        (("env", "frame_skip"), "4", "env.frame_skip must be a int, got '4'"),
        (("sessions", 0, "num_envs"), True, "sessions[0].num_envs must be a number in range, got True"),
        (("sessions", 0, "warp"), 1, "sessions[0] has a key this version does not know ('warp')"),
        (
            ("shards", 0, "episodes", 0),
            2**62,
            "shards[0].episodes must be a list of 1 to rows integers in [0, 4611686018427387903]",
        ),
        (("shards", 0, "index"), 10**12, "shards[0].index must be an integer in [0, 1000000000]"),
        (("shards", 0, "rows"), 10**7, "shards[0].rows must be at most 1000000"),
        (("action_meanings", 0), 7, "action_meanings must be num_actions names such as NOOP, FIRE"),
        (
            ("totals", "steps"),
            "many",
            "totals must be null or a mapping of steps, shards, episodes, completed_episodes, bytes",
        ),
        (("warp_speed",), 9, "has a key this version does not know ('warp_speed')"),
        (("seed",), "<delete>", "lacks the key 'seed'"),
    ],
)
def test_each_field_is_checked_with_one_line(dataset_copy: Path, path: tuple, value: object, expected: str) -> None:
    write(dataset_copy, mutated(read(dataset_copy), path, value))
    code, err = inspect(dataset_copy)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert expected in err and err.strip().endswith("the manifest is corrupt: regenerate the dataset"), err


def test_a_number_too_long_to_parse_is_one_line(dataset_copy: Path) -> None:
    """Catches Python's 4300-digit limit on int() escaping as a ValueError traceback."""
    text = (dataset_copy / "manifest.json").read_text().replace('"seed": 7', '"seed": 1' + "0" * 5000)
    (dataset_copy / "manifest.json").write_text(text)
    with pytest.raises(DatasetError, match="not valid JSON"):
        Manifest.read(dataset_copy)
    (dataset_copy / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(DatasetError, match="not valid JSON"):
        Manifest.read(dataset_copy)


def test_num_actions_below_the_recorded_actions_is_refused(dataset_copy: Path) -> None:
    """Catches a manifest whose num_actions (edited down) passes inspection and crashes training's embedding later."""
    manifest = read(dataset_copy)
    write(dataset_copy, {**manifest, "num_actions": 3, "action_meanings": manifest["action_meanings"][:3]})
    ShardedDataset(dataset_copy, verify="none").close()  # trusts the manifest, by request
    with pytest.raises(DatasetError, match=r"shard_00000_action.npy: actions 0..5, the manifest says the game has 3"):
        ShardedDataset(dataset_copy, verify="quick")
    line = error_line(run([*INSPECT, str(dataset_copy), "--verify", "quick"]))
    assert "actions 0..5, the manifest says the game has 3; the manifest is corrupt" in line


def test_episodes_and_dones_are_checked_against_the_columns(dataset_copy: Path) -> None:
    manifest = read(dataset_copy)
    episodes = manifest["shards"][1]["episodes"]
    write(dataset_copy, mutated(manifest, ("shards", 1, "episodes"), [*episodes, max(episodes) + 1000]))
    with pytest.raises(
        DatasetError, match="shard_00001_episode.npy: its episodes differ from the manifest's list for shard 1"
    ):
        ShardedDataset(dataset_copy, verify="quick")
    dones = manifest["shards"][2]["dones"]
    write(dataset_copy, mutated(manifest, ("shards", 2, "dones"), dones + 1))
    with pytest.raises(
        DatasetError, match=f"shard_00002_done.npy: {dones} episode ends, the manifest says {dones + 1}"
    ):
        ShardedDataset(dataset_copy, verify="quick")


def test_an_action_column_rewritten_out_of_range_is_refused(dataset_copy: Path) -> None:
    """The same check from the data's side: a shard (and its checksum in the manifest) with an action of 99."""
    path = shard_path(dataset_copy, 3, "action")
    actions = np.load(path)
    actions[5] = 99
    np.save(path, actions)
    with pytest.raises(DatasetError, match="actions 0..99, the manifest says the game has 6"):
        ShardedDataset(dataset_copy, verify="quick")
