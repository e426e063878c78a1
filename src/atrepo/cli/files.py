"""Opening input files for commands: paths, or ``-`` for stdin (spooled so it can seek)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A seekable binary stream for ``path``; stdin is copied to a temporary file first."""
    if path == "-":
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            spool.seek(0)
            yield spool
        return
    with open(path, "rb") as fh:
        yield fh
