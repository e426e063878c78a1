"""CAR index, C table against pure Python: ``CarIndex`` and any-order verification agree.

First the streaming reader's sections (``parse_raw_sections``, C or Python) must agree.

``CarIndex.build`` on the C table (``_carindex``) must end exactly as on the
pure-Python table: the same error (type, message, offset), or the same blocks
at the same ordinals and locations with the same ones kept. Full verification
of the input as a repository CAR, on the index path, must then give the same
records and summary or the same error with either table. Without the
extension (not built, or ``ATREPO_PURE=1``) only the pure-Python half runs,
which still holds it to the error contract.
"""

from __future__ import annotations

import io
from typing import Any

from atrepo.core import _carnative
from atrepo.core import verify as verify_module
from atrepo.core.car import CarIndex, CarReader, parse_raw_sections
from atrepo.core.errors import AtrepoError
from atrepo.core.verify import RepoSummary, verify_repo_car

from .harness import check_error

#: How MST node blocks start: the index keeps such blocks in memory (a small budget here).
NODE_PREFIX = b"\xa2\x61e"


def _index(data: bytes, native: bool) -> tuple[Any, ...]:
    try:
        index = CarIndex.build(io.BytesIO(data), native=native, keep_prefix=NODE_PREFIX, keep_bytes=512)
    except AtrepoError as exc:
        check_error(exc)
        return type(exc).__name__, str(exc), getattr(exc, "offset", None)
    load = index.loader(io.BytesIO(data))
    blocks = [(index.location(i), load(i, cid)) for i, cid in _cids(data, index)]
    return len(index), index.kept_bytes, index.roots, blocks


def _cids(data: bytes, index: CarIndex) -> list[tuple[int, Any]]:
    """(ordinal, CID) of every block the index holds, found through the pure-Python reader."""
    out = []
    find = index.finder()
    for cid, _, _ in CarReader(io.BytesIO(data)):
        out.append((find(cid), cid))
    return out


def _verify(data: bytes, table: Any) -> tuple[Any, ...]:
    saved = _carnative.Table, verify_module.STASH_ONE_PASS
    _carnative.Table, verify_module.STASH_ONE_PASS = table, False
    summary = RepoSummary()
    try:
        items = list(verify_repo_car(io.BytesIO(data), summary=summary))
    except AtrepoError as exc:
        check_error(exc)
        return type(exc).__name__, str(exc), summary.records
    finally:
        _carnative.Table, verify_module.STASH_ONE_PASS = saved
    return items, summary.blocks, summary.nodes, summary.unreferenced


def _raw(data: bytes, native: bool) -> tuple[Any, ...]:
    """The streaming reader's blocks as (CID bytes, data), or its error (C section parsing or not)."""
    saved = _carnative.raw_sections
    if not native:
        _carnative.raw_sections = None
    got: list[Any] = []
    try:
        got.extend(CarReader(io.BytesIO(data), sections=parse_raw_sections, chunk_size=1024))
    except AtrepoError as exc:
        check_error(exc)
        return type(exc).__name__, str(exc), getattr(exc, "offset", None), got
    finally:
        _carnative.raw_sections = saved
    return ("ok", got)


def test_one_input(data: bytes) -> None:
    raw = _raw(data, False)
    if _carnative.raw_sections is not None:
        assert _raw(data, True) == raw, "the C and pure-Python section parsers disagree"
    pure = _index(data, False)
    native = _carnative.Table
    if native is not None:
        assert _index(data, True) == pure, "the C index and the pure-Python index disagree"
    outcome = _verify(data, None)
    if native is not None:
        assert _verify(data, native) == outcome, "verification differs between the C and pure-Python index"
