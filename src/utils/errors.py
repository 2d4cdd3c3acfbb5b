"""User-facing errors: one clear line and exit code 2 instead of a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

DEBUG_ENV = "AWM_DEBUG"  # set AWM_DEBUG=1 to see the full traceback of a UserError


class UserError(Exception):
    """A problem with what the user asked for (a path, a flag, a file on disk), fixable by the user."""


class ConfigError(UserError):
    """A config key is unknown, of the wrong type, out of range, or disagrees with another key."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (not the whole usage) and exits with code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run an entry point: UserError -> one line on stderr and exit 2; Ctrl-C -> exit 130."""
    try:
        code = main(argv)
    except UserError as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
