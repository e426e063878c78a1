"""Opening input files for commands: paths, or ``-`` for stdin (spooled so it can seek)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ..core.errors import InputFileError


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputFileError(f"cannot open {path}: {exc.strerror or exc}") from None


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A seekable binary stream for ``path``; stdin is copied to a temporary file first."""
    if path == "-":
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            spool.seek(0)
            yield spool
        return
    with _open(path) as fh:
        yield fh


@contextmanager
def open_stream(path: str) -> Iterator[BinaryIO]:
    """A binary stream for ``path`` read front to back; ``-`` is stdin as it arrives."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with _open(path) as fh:
        yield fh
