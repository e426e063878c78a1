"""The optional C index of CAR blocks, and whether it is in use.

``_carindex`` (``_carindex.c``) indexes the sections of a CAR file, each hash
checked, into flat arrays with no Python object per block, and looks blocks
up by binary CID; it also parses the common sections of the streaming
reader (``car.parse_raw_sections``). ``car.CarIndex`` uses it when present; a plain install
without a compiler still works with the pure-Python table in ``car.py``, and
``ATREPO_PURE=1`` in the environment (read once, by ``_native``) forces that
path. The tests run both and compare. Either way the outcome is the same: the
C scan only ever indexes sections it proves well formed and hands every other
section back to the Python code, which indexes it or raises its located error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._native import PURE

__all__ = ["MAX_BLOCKS", "SHA_EXTENSIONS", "Table", "raw_sections", "table_seed"]

#: ``Table(expected_blocks, seed)``: the C index (see ``car.CarIndex``); None when the
#: extension is missing or switched off.
Table: Any = None
#: Whether the C code hashes on the CPU's SHA extensions (else its portable SHA-256).
SHA_EXTENSIONS = False
#: Most blocks the C table holds (23-bit ordinals; ``MAX_CAR_INDEX_BLOCKS`` is below it).
MAX_BLOCKS = 0
#: ``raw_sections(buf, pos, base, max_section, out)``: the common sections of a CAR
#: buffer as (binary CID, data), for ``car.parse_raw_sections``; None unless the
#: extension hashes on the SHA extensions (its portable SHA-256 is slower than
#: hashlib on long data, and this path has less besides hashing to save).
raw_sections: Callable[[bytes, int, int, int, list[Any]], tuple[int, int]] | None = None


def table_seed() -> int:
    """A per-process secret for the C table's slot hash: Python's own (randomised) bytes hash.

    Keyed like ``dict`` (``PYTHONHASHSEED``), so a file cannot aim its blocks
    at one probe run, and no randomness is read here.
    """
    return hash(b"atrepo.core._carindex") & ((1 << 64) - 1)


def _load() -> None:
    global Table, SHA_EXTENSIONS, MAX_BLOCKS, raw_sections
    if PURE:
        return
    try:
        module: Any = importlib.import_module("atrepo.core._carindex")
    except ImportError:
        return
    Table = module.Table
    SHA_EXTENSIONS = bool(module.SHA_EXTENSIONS)
    MAX_BLOCKS = int(module.MAX_BLOCKS)
    if SHA_EXTENSIONS:
        raw_sections = module.raw_sections


_load()
