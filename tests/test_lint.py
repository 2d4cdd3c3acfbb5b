"""make lint inside make test: the repository is formatted by ruff and passes its checks (pyproject.toml's
[tool.ruff])."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "check"])
def test_ruff_passes_over_the_repository(command: list[str]) -> None:
    """Catches an unformatted file, a line over 120 characters, an unsorted or unused import: the same two commands
    as make lint, run from the repository root so that ruff reads its configuration and skips what .gitignore lists."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"ruff {' '.join(command)} . found problems:\n{result.stdout}{result.stderr}"
