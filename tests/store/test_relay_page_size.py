"""The relay database's page size: new files get ``RELAY_PAGE_SIZE``, existing files keep theirs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from atrepo.core.events import IdentityEvent, encode_frame
from atrepo.store import PendingEvent, SQLiteRelayStore
from atrepo.store.relay import RELAY_DB_FILENAME, RELAY_PAGE_SIZE


def page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        (size,) = db.execute("PRAGMA page_size").fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
        return int(size)
    finally:
        db.close()


def frame(seq: int) -> bytes:
    return encode_frame(IdentityEvent(seq, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "2024-05-01T12:34:56.789Z"))


def test_new_file_gets_the_relay_page_size(tmp_path: Path) -> None:
    store = SQLiteRelayStore(tmp_path)
    try:
        rows = store.apply_batch(
            [], [PendingEvent("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "#identity", 1, frame)]
        )
        assert [r.seq for r in rows] == [1]
    finally:
        store.close()
    assert page_size(tmp_path / RELAY_DB_FILENAME) == RELAY_PAGE_SIZE
    store = SQLiteRelayStore(tmp_path)  # reopened: same size, same content
    try:
        assert store.head_seq() == 1
    finally:
        store.close()
    assert page_size(tmp_path / RELAY_DB_FILENAME) == RELAY_PAGE_SIZE


def test_existing_file_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / RELAY_DB_FILENAME
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")  # has content: its page size is fixed
    db.close()
    store = SQLiteRelayStore(tmp_path)
    try:
        assert store.head_seq() == 0
    finally:
        store.close()
    assert page_size(path) == 4096
