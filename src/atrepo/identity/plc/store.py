"""SQLite storage for a PLC directory: audit logs, acceptance, export.

Synchronous and single-writer by design: the server confines every call to one
worker thread, so checking an operation against the stored log and writing it
happen in one ``BEGIN IMMEDIATE`` transaction and two submissions for the same
DID can never both pass against the same head. A rejected submission rolls
back, so stored state never changes on error.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atrepo.identity import limits
from atrepo.identity.plc.operations import (
    LogEntry,
    PLCRuleError,
    PLCState,
    check_next_operation,
    check_operation,
    check_reference_limits,
    state_after,
)

__all__ = ["PLCStore", "StoreSettings"]

log = logging.getLogger("atrepo.identity.plc")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    did TEXT NOT NULL,
    cid TEXT NOT NULL,
    operation TEXT NOT NULL,
    nullified INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    UNIQUE (did, cid)
);
CREATE INDEX IF NOT EXISTS operations_by_time ON operations (created_ms);
"""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Acceptance limits; defaults are the reference directory's."""

    max_op_bytes: int = limits.PLC_OP_MAX_BYTES
    recovery_window_ms: int = limits.PLC_RECOVERY_WINDOW_MS
    #: (window in ms, most ops already stored within it) per DID.
    rate_limits: Sequence[tuple[int, int]] = limits.PLC_RATE_LIMITS


class PLCStore:
    """Audit logs of many DIDs in one SQLite file (or in memory)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        settings: StoreSettings | None = None,
        clock: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self.settings = settings or StoreSettings()
        self._clock = clock
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT MAX(created_ms) FROM operations").fetchone()
        self._last_ms: int = row[0] if row[0] is not None else -1

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _next_timestamp(self) -> int:
        """Server time in ms, strictly after every timestamp already stored."""
        return max(self._clock(), self._last_ms + 1)

    # --- reads -----------------------------------------------------------

    def audit_log(self, did: str) -> list[LogEntry]:
        """Every stored op of ``did``, oldest first, nullified ones included."""
        rows = self._db.execute(
            "SELECT operation, cid, nullified, created_ms FROM operations WHERE did = ? ORDER BY seq", (did,)
        ).fetchall()
        return [LogEntry(did, json.loads(op), cid, bool(n), ms) for op, cid, n, ms in rows]

    def active_log(self, did: str) -> list[LogEntry]:
        """The valid chain: the audit log without nullified ops."""
        return [e for e in self.audit_log(did) if not e.nullified]

    def state(self, did: str) -> tuple[bool, PLCState | None]:
        """(known, state); state is None for an unknown or tombstoned DID."""
        active = self.active_log(did)
        if not active:
            return False, None
        return True, state_after(did, active[-1].operation)

    def export_sequenced(self, after: int, count: int) -> list[tuple[int, LogEntry]]:
        """Ops with sequence number above ``after``, in sequence order."""
        rows = self._db.execute(
            "SELECT seq, did, operation, cid, nullified, created_ms FROM operations "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, count),
        ).fetchall()
        return [(seq, LogEntry(did, json.loads(op), cid, bool(n), ms)) for seq, did, op, cid, n, ms in rows]

    def export_by_time(self, after_ms: int | None, count: int) -> list[LogEntry]:
        """Ops created after ``after_ms`` (all when None), oldest first."""
        rows = self._db.execute(
            "SELECT did, operation, cid, nullified, created_ms FROM operations "
            "WHERE created_ms > ? ORDER BY created_ms, seq LIMIT ?",
            (after_ms if after_ms is not None else -(2**62), count),
        ).fetchall()
        return [LogEntry(did, json.loads(op), cid, bool(n), ms) for did, op, cid, n, ms in rows]

    # --- writes ----------------------------------------------------------

    def _check_rate(self, db: sqlite3.Connection, did: str, now_ms: int) -> None:
        for window_ms, most in self.settings.rate_limits:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM operations WHERE did = ? AND created_ms > ?", (did, now_ms - window_ms)
            ).fetchone()
            if count >= most:
                hours = window_ms / 3_600_000
                raise PLCRuleError(
                    "rate-limit", f"{did} already has {count} operations in the last {hours:g} h"
                )

    def submit(self, did: str, op: Mapping[str, Any]) -> LogEntry:
        """Check ``op`` against every directory rule and append it to the log.

        Raises :class:`PLCRuleError` (nothing is written) when any rule fails.
        """
        check_operation(op)
        if op.get("type") == "create":
            raise PLCRuleError("format", "legacy create operations are no longer accepted; use plc_operation")
        check_reference_limits(op)
        with self._transaction() as db:
            now_ms = self._next_timestamp()
            self._check_rate(db, did, now_ms)
            entries = self.audit_log(did)
            verdict = check_next_operation(
                did,
                [e for e in entries if not e.nullified],
                op,
                now_ms,
                nullified_cids={e.cid for e in entries if e.nullified},
                max_op_bytes=self.settings.max_op_bytes,
                recovery_window_ms=self.settings.recovery_window_ms,
            )
            if any(e.cid == verdict.cid for e in entries):
                raise PLCRuleError("prev", f"operation {verdict.cid} is already in the log")
            for gone in verdict.nullified:
                db.execute("UPDATE operations SET nullified = 1 WHERE did = ? AND cid = ?", (did, gone.cid))
            db.execute(
                "INSERT INTO operations (did, cid, operation, nullified, created_ms) VALUES (?, ?, ?, 0, ?)",
                (did, verdict.cid, json.dumps(dict(op), separators=(",", ":")), now_ms),
            )
        self._last_ms = now_ms
        if verdict.nullified:
            log.warning(
                "%s recovered: %d op(s) nullified from %s",
                did,
                len(verdict.nullified),
                verdict.nullified[0].cid,
            )
        log.info("accepted %s op %s for %s", op.get("type"), verdict.cid, did)
        return LogEntry(did, op, verdict.cid, False, now_ms)
