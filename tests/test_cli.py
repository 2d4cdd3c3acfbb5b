"""The installed console scripts and the flag spellings: awm-* run the same commands as python -m, from any folder,
and every --long_flag is also --long-flag."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import tomllib

from src import cli
from tests.conftest import ROOT, error_line, run_main

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_names_a_command_of_src_cli() -> None:
    assert set(SCRIPTS) == {
        "awm-generate",
        "awm-inspect",
        "awm-merge",
        "awm-convert",
        "awm-import-dqn",
        "awm-train",
        "awm-eval",
        "awm-play",
        "awm-agent",
        "awm-agent-eval",
    }
    for target in SCRIPTS.values():
        module, name = target.split(":")
        assert module == "src.cli" and callable(getattr(cli, name))


@pytest.mark.slow  # starts the installed scripts as processes
def test_the_installed_scripts_run_from_any_folder(small_dataset: Path, tmp_path: Path) -> None:
    try:
        installed = {e.name for e in distribution("atari-world-model").entry_points if e.group == "console_scripts"}
    except PackageNotFoundError:
        pytest.skip("the package is not installed (make and CI install it with pip install -e)")
    assert installed == set(SCRIPTS)  # the install is current: pip install -e . after changing [project.scripts]
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [bin_dir / "awm-inspect", str(small_dataset), "--verify", "quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "steps     1,200 of 1,200" in result.stdout
    assert (
        error_line(
            subprocess.run(
                [bin_dir / "awm-generate", "--out_dir", str(tmp_path / "d"), "--steps", "0"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        == "error: --steps must be >= 1, got 0"
    )


def test_dashed_flags_are_the_same_flags(tmp_path: Path) -> None:
    from src.dataset import generate_dataset

    result = run_main(
        generate_dataset.main, ["--out-dir", str(tmp_path / "d"), "--steps", "5", "--max-episode-steps", "0"]
    )
    assert error_line(result) == "error: --max_episode_steps must be >= 1, got 0"
    assert not (tmp_path / "d").exists()


def test_an_error_line_cannot_be_broken_or_steer_the_terminal(capsys: pytest.CaptureFixture) -> None:
    """Catches a newline or an ANSI escape quoted from a file or a flag reaching the terminal raw: the one line would
    become two, or clear the screen. Each is written as its escape code."""
    from src.utils.errors import UserError, run_cli

    def main(argv: list[str] | None) -> int:
        raise UserError("'data/po\nng' and '\x1b[2Jcleared' and '\u202eevil'")

    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err == "error: 'data/po\\nng' and '\\x1b[2Jcleared' and '\\u202eevil'\n"
