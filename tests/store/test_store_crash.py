"""Acknowledged writes survive SIGKILL at any moment, and the log and repositories stay whole.

A child process (``crash_writer.py``) writes to three repositories through
the store worker and prints each write once its transaction has committed.
The parent kills it with SIGKILL after a random number of acknowledgements
(plus a random few milliseconds, so the kill lands anywhere in a
transaction), reopens the store and checks everything it can; then the next
round's child carries on in the same directory.
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from store_support import POST, check_repo

from atrepo.core.events import CommitEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.store.sqlite import SQLiteStore

SCRIPT = Path(__file__).with_name("crash_writer.py")
ROUNDS = 12
#: Most acknowledgements a round waits for before the kill.
MOST_ACKS = 100
#: A child that has said nothing for this long has failed (it is bounded, not timed).
SILENCE_S = 20.0


@dataclass
class Expected:
    """What the acknowledgements promise, across rounds."""

    created: set[tuple[str, str]] = field(default_factory=set)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    maybe_deleted: set[tuple[str, str]] = field(default_factory=set)
    acked: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    def take(self, line: str) -> bool:
        """Record one line; True for an acknowledgement."""
        kind, did, rkey, *rest = line.split()
        if kind == "W":
            self.maybe_deleted.add((did, rkey))
            return False
        seq = int(rest[0])
        assert seq not in self.acked, f"seq {seq} acknowledged twice"
        self.acked[seq] = (kind, did, rkey)
        (self.created if kind == "C" else self.deleted).add((did, rkey))
        return True


def run_round(data: Path, seed: int, acks_wanted: int, pause_s: float, expected: Expected) -> int:
    """Start a child, let it acknowledge ``acks_wanted`` writes, kill it; return the acknowledgements seen."""
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(data), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=SCRIPT.parent,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            lines.put(raw)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    acks = 0
    try:
        while acks < acks_wanted:
            try:
                raw = lines.get(timeout=SILENCE_S)
            except queue.Empty:
                raise AssertionError(f"the writer said nothing for {SILENCE_S} s") from None
            if raw is None:
                raise AssertionError(f"the writer exited by itself: {child.stderr.read().decode()[-2000:]}")
            acks += expected.take(raw.decode())
        time.sleep(pause_s)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        reader.join(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    # lines printed before the kill are acknowledgements too; a torn last line is not
    while (raw := lines.get_nowait()) is not None:
        if raw.endswith(b"\n"):
            acks += expected.take(raw.decode())
    child.stdout.close()
    child.stderr.close()
    return acks


def check_store(data: Path, expected: Expected) -> None:
    store = SQLiteStore(data)
    try:
        assert store.integrity_check() == ["ok"]
        rows = store.read_events(0, 1_000_000)
        assert [row.seq for row in rows] == list(range(1, store.head_seq() + 1))  # no gap, no duplicate
        revs: dict[str, str | None] = {}
        for row in rows:
            frame = decode_frame(row.frame)
            if isinstance(frame, CommitEvent):  # each repo's commits chain in seq order
                assert frame.since == revs.get(row.did), f"seq {row.seq}: the chain of {row.did} breaks"
                revs[row.did] = frame.rev
            if row.seq in expected.acked:
                kind, did, rkey = expected.acked[row.seq]
                assert isinstance(frame, CommitEvent) and frame.repo == did
                action = "create" if kind == "C" else "delete"
                assert [(op.action, op.path) for op in frame.ops] == [(action, f"{POST}/{rkey}")]
        assert set(expected.acked) <= {row.seq for row in rows}
        for did, rev in revs.items():
            account = store.get_account(did)
            assert account is not None and account.rev == rev
            records = check_repo(store, did, PrivateKey.from_bytes("k256", account.signing_key))
            for who, rkey in expected.created - expected.maybe_deleted:
                if who == did:
                    assert f"{POST}/{rkey}" in records, f"acknowledged {did} {rkey} is lost"
            for who, rkey in expected.deleted:
                if who == did:
                    assert f"{POST}/{rkey}" not in records, f"acknowledged delete of {did} {rkey} is undone"
    finally:
        store.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    data = tmp_path / "data"
    expected = Expected()
    for round_no in range(ROUNDS):
        acks = run_round(data, rng.randrange(2**32), rng.randint(1, MOST_ACKS), rng.random() * 0.02, expected)
        assert acks > 0, f"round {round_no} (seed {seed})"
        check_store(data, expected)
    assert len(expected.acked) >= ROUNDS
