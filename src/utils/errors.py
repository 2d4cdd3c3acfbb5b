"""User-facing errors: one clear line and exit code 2 instead of a traceback."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from typing import NoReturn

# A disk that fills up while a command writes (after its checks of free space passed): one line, not a traceback.
DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
DEBUG_ENV = "AWM_DEBUG"  # set AWM_DEBUG=1 to see the full traceback of a UserError


MAX_TEXT = 4096  # the longest string a file of ours (a manifest, a checkpoint) may hold where a path or a name goes


def is_text(value: object, limit: int = MAX_TEXT) -> bool:
    """A string that prints as itself on one line: at most `limit` characters, none of them a control character
    (a newline or an ANSI escape from an edited file would break the one-line errors, or rewrite the terminal)."""
    return isinstance(value, str) and len(value) <= limit and value.isprintable()


def one_line(text: str) -> str:
    """`text` with every character that would not print as itself (newlines, escapes) written as its escape code:
    what an error line quotes from a file or the command line cannot break the line or steer the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UserError(Exception):
    """A problem with what the user asked for (a path, a flag, a file on disk), fixable by the user."""


class ConfigError(UserError):
    """A config key is unknown, of the wrong type, out of range, or disagrees with another key."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (not the whole usage) and exits with code 2, and every --long_flag
    is also accepted as --long-flag."""

    def add_argument(self, *names: str, **kwargs) -> argparse.Action:  # noqa: ANN003
        dashed = [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        return super().add_argument(*names, *dashed, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run an entry point: UserError or a full disk -> one line on stderr and exit 2; Ctrl-C -> exit 130."""
    try:
        code = main(argv)
    except UserError as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in DISK_FULL or os.environ.get(DEBUG_ENV):
            raise
        where = f" writing '{e.filename}'" if e.filename else ""
        print(
            f"error: {DISK_FULL[e.errno]}{where}; free some space and run the command again: what it completed is kept "
            "(a dataset's listed shards, a run's last checkpoint, a recording's listed shards)",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
