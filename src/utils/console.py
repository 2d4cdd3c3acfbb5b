"""A command's console output kept in a log file of its output folder (train.log, eval.log)."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path


class Tee(io.TextIOBase):
    """stdout that is also written to a log file: held in memory until the file can be opened (the output folder is
    made after the checks), then appended to it line by line."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.held, self.file = stream, io.StringIO(), None

    def write(self, text: str) -> int:
        self.stream.write(text)
        (self.file or self.held).write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        if self.file is not None:
            self.file.flush()

    def open(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")
        self.file.write(self.held.getvalue())
        self.file.flush()


@contextlib.contextmanager
def teed_stdout() -> Iterator[Tee]:
    """Everything printed inside goes to the console and, once Tee.open is called, to that file too."""
    tee = Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee):
            yield tee
    finally:
        if tee.file is not None:
            tee.file.close()
