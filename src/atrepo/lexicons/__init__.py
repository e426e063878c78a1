"""The lexicon documents atrepo ships, and reading more from a directory.

This is the file-reading edge of :mod:`atrepo.core.lexicon`: the core takes
parsed documents; this module reads them from the package data (``data/``,
see its SOURCE.md for provenance and licences) or from an operator's
directory, and builds registries over them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from atrepo.core.errors import InputFileError, InvalidLexicon
from atrepo.core.jsonio import parse_outside_json
from atrepo.core.lexicon import LexiconDoc, Registry, parse_document

__all__ = [
    "MAX_LEXICON_FILE_BYTES",
    "builtin_documents",
    "builtin_registry",
    "load_directory",
    "load_file",
    "registry_with",
]

#: Largest lexicon file we read (the biggest published one is ~40 kB).
MAX_LEXICON_FILE_BYTES = 1_000_000


def _walk(folder: Traversable) -> Iterator[Traversable]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.name.endswith(".json"):
            yield entry


@functools.cache
def builtin_documents() -> tuple[LexiconDoc, ...]:
    """Every shipped lexicon document, parsed and checked (once per process)."""
    root = resources.files(__name__).joinpath("data")
    # Our own package data: plain json is fine, and any failure here is a packaging bug.
    return tuple(parse_document(json.loads(entry.read_bytes())) for entry in _walk(root))


@functools.cache
def builtin_registry() -> Registry:
    """One shared registry of the shipped lexicons; validators compile on first use."""
    return Registry(builtin_documents())


def load_file(path: str | Path) -> LexiconDoc:
    """Read and check one lexicon file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read lexicon file {path}: {exc.strerror or exc}") from None

    def invalid(why: str) -> InvalidLexicon:
        return InvalidLexicon(str(path), "", "json", why)

    obj = parse_outside_json(data, invalid, max_bytes=MAX_LEXICON_FILE_BYTES, max_depth=64)
    try:
        return parse_document(obj)
    except InvalidLexicon as exc:
        raise InvalidLexicon(f"{exc.lexicon} ({path})", exc.path, exc.rule, exc.detail) from None


def load_directory(path: str | Path) -> list[LexiconDoc]:
    """Every ``*.json`` lexicon under a directory (recursively), in path order."""
    root = Path(path)
    if not root.is_dir():
        raise InputFileError(f"lexicon directory {root} does not exist or is not a directory")
    return [load_file(p) for p in sorted(root.rglob("*.json")) if p.is_file()]


def registry_with(extra: Iterable[LexiconDoc]) -> Registry:
    """The shipped lexicons plus ``extra``; an extra document replaces a shipped one of the same id."""
    extra = list(extra)
    replaced = {doc.id for doc in extra}
    return Registry([*(d for d in builtin_documents() if d.id not in replaced), *extra])
