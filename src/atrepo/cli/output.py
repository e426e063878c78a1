"""Shared CLI output: JSON lines for scripts, progress on a terminal only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..core.errors import AtrepoError


def emit_json(obj: Any) -> None:
    """One JSON object per line on stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()  # a supervisor or a script may be waiting for this line on a pipe


def error_obj(exc: BaseException | None) -> dict[str, str] | None:
    if exc is None:
        return None
    name = exc.name if isinstance(exc, AtrepoError) else type(exc).__name__
    return {"name": name, "message": str(exc)}


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        return None


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        yield _RichProgress(bar, bar.add_task(description, total=total))
