"""The layering of src/ (.importlinter) holds, and the check does catch an import that breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"]


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports over root/src with root/.importlinter, as a fresh process (the graph of that tree, not ours)."""
    return subprocess.run(LINT, cwd=root, capture_output=True, text=True, timeout=300)


def test_the_layers_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """Catches a contract that cannot fail: utils importing training breaks the layers and the entry-point rule."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    io = tmp_path / "src" / "utils" / "io.py"
    io.write_text(io.read_text() + "\nfrom src.training.loop import train  # noqa: E402,F401\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "src.utils.io -> src.training.loop" in result.stdout
