"""Fuzzing what the commands read from disk: a manifest or a checkpoint with one field replaced by junk (another type,
a huge or negative number, a path, nested junk) or removed.

Whatever the mutation, a command either works or stops with one line on stderr and exit code 2: never a traceback,
never a write outside the output it was asked for, never a change to the input. hypothesis draws the mutations
(derandomized: CI runs the same ones every time); `pytest tests/test_fuzz.py -s` prints how many were tried.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_main

CONTROL_TEXT = (
    st.one_of(  # what an edited file may hold where a name goes: newlines, ANSI escapes, NUL, a very long line
        st.sampled_from(["a\nb", "\x1b[2J\x1b[31mred", "NO\rOP", "x\x00y", "\u202eevil", "p" * 5000, "\t"]),
        st.text(
            alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "L"]), min_size=1, max_size=8
        ),
    )
)
TENSOR_VALUES = st.sampled_from([math.nan, math.inf, -math.inf, 1e38, -1e38, 0.0, 1e-45])
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**13]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["../../escape", "${oc.env:HOME}", "", "Pong"]),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
TRIED: dict[str, int] = {}


def paths(value: Any, prefix: tuple = (), depth: int = 4) -> Iterator[tuple]:
    """Every key path into nested dicts and lists (the first and last item of a long list), down to `depth`."""
    if depth == 0:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else []
    items = list(items)
    if isinstance(value, (list, tuple)) and len(items) > 2:
        items = [items[0], items[-1]]
    for key, child in items:
        if isinstance(child, torch.Tensor):
            continue
        yield (*prefix, key)
        yield from paths(child, (*prefix, key), depth - 1)


def mutate(tree: Any, path: tuple, junk: Any, delete: bool) -> None:
    """Replace (or remove) the value at `path` in place; a tuple on the way becomes a list."""
    parent = tree
    for key in path[:-1]:
        if isinstance(parent[key], tuple):
            parent[key] = list(parent[key])
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk


def run_command(main: Callable, argv: list[str]) -> tuple[int, str]:
    result = run_main(main, argv)
    return result.returncode, result.stderr


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".readers"
    }


def check_outcome(what: str, code: int, err: str) -> None:
    TRIED[what] = TRIED.get(what, 0) + 1
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err


@pytest.fixture(scope="module")
def manifest_tree(small_dataset: Path) -> dict:
    return json.loads((small_dataset / "manifest.json").read_text())


@pytest.fixture(scope="module")
def checkpoint_state(short_run) -> dict:
    return torch.load(Path(short_run[1]["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)


def linked_copy(source: Path, target: Path) -> None:
    """The dataset's shard files hard-linked (never written by these commands: any write would show in their mtime),
    its manifest copied."""
    target.mkdir()
    for p in source.iterdir():
        if p.name.startswith("shard_"):
            os.link(p, target / p.name)
        elif p.name == "manifest.json":
            shutil.copyfile(p, target / p.name)


@pytest.mark.slow
def test_a_mutated_manifest_is_one_line_or_works(small_dataset: Path, manifest_tree: dict) -> None:
    from src.dataset import generate_dataset, inspect_dataset

    @settings(SETTINGS, max_examples=150)
    @given(path=st.sampled_from(list(paths(manifest_tree))), junk=JUNK, delete=st.booleans())
    def fuzz(path: tuple, junk: Any, delete: bool) -> None:
        tree = json.loads(json.dumps(manifest_tree))
        mutate(tree, path, junk, delete)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "pong"
            linked_copy(small_dataset, data)
            (data / "manifest.json").write_text(json.dumps(tree))
            before = snapshot(data)
            code, err = run_command(inspect_dataset.main, [str(data), "--verify", "quick"])
            check_outcome("manifest: inspect", code, err)
            assert snapshot(data) == before  # a reader changes nothing
            code, err = run_command(generate_dataset.main, ["--out_dir", str(data), "--resume", "--num_envs", "1"])
            check_outcome("manifest: generate --resume", code, err)
            if code == 2:
                assert snapshot(data) == before  # refused before anything was written
            assert {p.name for p in Path(tmp).iterdir()} == {"pong"}  # nothing written beside the dataset

    fuzz()
    print(f"\nmutated manifests tried: { ({k: v for k, v in TRIED.items() if k.startswith('manifest')}) }")


@pytest.mark.slow
def test_a_mutated_checkpoint_is_one_line_or_works(small_dataset: Path, short_run, checkpoint_state: dict) -> None:
    from src import eval as evaluation

    # 60 examples: two in three evaluate fully (~1 s each, half of it matplotlib's plots); 100 took 83 s of the suite.
    @settings(SETTINGS, max_examples=60)
    @given(path=st.sampled_from(list(paths(checkpoint_state))), junk=JUNK, delete=st.booleans())
    def fuzz(path: tuple, junk: Any, delete: bool) -> None:
        state = copy.deepcopy(checkpoint_state)  # the module's state stays as loaded for the tests after this one
        try:
            mutate(state, path, junk, delete)
        except (TypeError, KeyError, IndexError):  # a path through a value the mutation cannot edit (the RNG's tuples)
            return
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint, out = Path(tmp) / "bad.pt", Path(tmp) / "eval"
            torch.save(state, checkpoint)
            before = snapshot(small_dataset)
            code, err = run_command(
                evaluation.main,
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--game",
                    "Pong",
                    "--data_dir",
                    str(small_dataset),
                    "--horizon",
                    "2",
                    "--episodes",
                    "1",
                    "--starts_per_episode",
                    "2",
                    "--videos",
                    "0",
                    "--event_episodes",
                    "2",
                    "--event_horizon",
                    "2",
                    "--out_dir",
                    str(out),
                ],
            )
            check_outcome("checkpoint: eval", code, err)
            assert snapshot(small_dataset) == before
            assert not out.exists() if code == 2 else len(list(out.iterdir())) == 1  # refused: no eval folder at all

    fuzz()
    print(f"\nmutated checkpoints tried: {TRIED['checkpoint: eval']} with eval")


def tensor_paths(state: dict) -> list[tuple]:
    """Every tensor of the weights and of Adam's state: (section, key) and (optimizer, state, index, moment)."""
    found = [("model", k) for k, v in state["model"].items() if v.is_floating_point()]
    found += [
        ("optimizer", "state", i, k)
        for i, moments in state["optimizer"]["state"].items()
        for k, v in moments.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    ]
    return found


def string_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every string of a checkpoint's nested dicts and lists (configs, the dataset's names, versions, ids)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else []
    for key, child in items:
        if isinstance(child, str):
            yield (*prefix, key)
        elif isinstance(child, (dict, list)):
            yield from string_paths(child, (*prefix, key))


def strict_json(path: Path) -> Any:
    """json.loads that refuses NaN and Infinity, as JSON does (and jq, browsers, other languages' parsers)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def check_one_clean_line(err: str) -> None:
    """No escape, carriage return or NUL from a file reaches the terminal: an error line writes them as escape codes."""
    assert not any(c in err for c in "\x1b\r\x00\u202e"), repr(err)


@pytest.mark.slow
def test_a_checkpoint_with_mutated_tensors_or_strings_is_one_line_or_works(
    small_dataset: Path, checkpoint_state: dict
) -> None:
    """A weight, a buffer or one of Adam's moments with NaN, an infinity or an extreme value in one element or all of
    them; a string field holding control characters: eval stops with one clean line naming the field, or (finite
    extremes) evaluates into a summary.json that is strict JSON."""
    from src import eval as evaluation

    tensors, strings = (
        tensor_paths(checkpoint_state),
        list(string_paths({k: checkpoint_state[k] for k in ("config", "dataset", "versions")})),
    )

    @settings(SETTINGS, max_examples=30)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        state = copy.deepcopy(checkpoint_state)
        if data.draw(st.booleans(), "tensor"):
            path = data.draw(st.sampled_from(tensors), "path")
            parent = state
            for key in path[:-1]:
                parent = parent[key]
            tensor = parent[path[-1]].clone()
            value = data.draw(TENSOR_VALUES, "value")
            if data.draw(st.booleans(), "whole"):
                tensor.fill_(value)
            else:
                tensor.view(-1)[data.draw(st.integers(0, tensor.numel() - 1), "element")] = value
            parent[path[-1]] = tensor
            what = "checkpoint tensor: eval"
        else:
            path = data.draw(st.sampled_from(strings), "path")
            mutate(state, path, data.draw(CONTROL_TEXT, "text"), delete=False)
            what = "checkpoint string: eval"
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint, out = Path(tmp) / "bad.pt", Path(tmp) / "eval"
            torch.save(state, checkpoint)
            code, err = run_command(
                evaluation.main,
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--game",
                    "Pong",
                    "--data_dir",
                    str(small_dataset),
                    "--horizon",
                    "2",
                    "--episodes",
                    "1",
                    "--starts_per_episode",
                    "2",
                    "--videos",
                    "1",
                    "--event_horizon",
                    "2",
                    "--out_dir",
                    str(out),
                    "--wandb_mode",
                    "disabled",
                ],
            )
            check_outcome(what, code, err)
            if code == 2:
                check_one_clean_line(err)
                assert not out.exists() and "checkpoint" in err
            else:
                summary = strict_json(next(out.iterdir()) / "summary.json")
                assert summary["horizon"] == 2

    fuzz()
    print(f"\nmutated checkpoints tried: { ({k: v for k, v in TRIED.items() if 'tensor' in k or 'string' in k}) }")


@pytest.mark.slow
def test_a_mutated_checkpoint_never_resumes_wrongly(
    small_dataset: Path, short_run, checkpoint_state: dict, tmp_path: Path
) -> None:
    """Resuming from a mutated last.pt: one line and the run folder untouched, or a resume that trains on."""
    from src import train as training

    keys = [
        p
        for p in paths(checkpoint_state)
        if p[0] in ("config", "dataset", "step", "elapsed_s", "best_mse", "wandb_id", "val")
    ]

    @settings(SETTINGS, max_examples=30)
    @given(path=st.sampled_from(keys), junk=JUNK, delete=st.booleans())
    def fuzz(path: tuple, junk: Any, delete: bool) -> None:
        state = copy.deepcopy(checkpoint_state)
        mutate(state, path, junk, delete)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            shutil.copytree(short_run[1]["run_dir"], run_dir)
            torch.save(state, run_dir / "checkpoints" / "last.pt")
            before = snapshot(run_dir)
            code, err = run_command(
                training.main,
                [
                    f"train.resume={run_dir}",
                    "train.max_steps=7",
                    f"experiment.runs_dir={tmp}/runs",
                    "train.val_rollout_enabled=false",
                ],
            )
            check_outcome("checkpoint: train.resume", code, err)
            if code == 2:
                assert snapshot(run_dir) == before and not (Path(tmp) / "runs").exists()

    fuzz()
    print(f"\nmutated checkpoints tried: {TRIED['checkpoint: train.resume']} with train.resume")
