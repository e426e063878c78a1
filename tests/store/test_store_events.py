"""The event log: seqs allocated inside the commit's transaction, frames encoded once, reads, pruning."""

from __future__ import annotations

import pytest
from store_support import FakeClock, commit, create, new_account

from atrepo.core.errors import LimitExceeded
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent, decode_frame, encode_frame
from atrepo.core.syntax import parse_datetime
from atrepo.store.base import Store


def test_seqs_run_on_without_gaps(store: Store, clock: FakeClock) -> None:
    assert store.head_seq() == 0 and store.oldest_seq() is None and store.read_events(0, 10) == []
    did, key = new_account(store, handle="seq.test", writes=[create("a")])
    rows = store.read_events(0, 100)
    assert [row.seq for row in rows] == [1, 2, 3, 4]
    assert [row.type for row in rows] == ["#identity", "#account", "#commit", "#sync"]
    assert all(row.did == did and row.time_ms == clock.ms for row in rows)
    for _ in range(5):
        clock.advance(10)
        _, event = commit(store, did, key, [create(f"r{event_count(store)}")])
        assert event.seq == store.head_seq()
    rows = store.read_events(0, 100)
    assert [row.seq for row in rows] == list(range(1, 10))
    assert store.oldest_seq() == 1 and store.head_seq() == 9
    assert store.read_events(4, 2) == rows[4:6]
    assert store.read_events(9, 10) == []


def event_count(store: Store) -> int:
    return len(store.read_events(0, 1000))


def test_frames_are_the_events_with_their_seq_and_time(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store, handle="frames.test")
    result, row = commit(store, did, key, [create("a")])
    frame = decode_frame(row.frame)
    assert isinstance(frame, CommitEvent)
    assert frame.seq == row.seq and frame.repo == did and frame.commit == result.commit.cid
    assert frame.since == result.since and frame.prev_data == result.prev_data and frame.ops == result.ops
    assert int(parse_datetime(frame.time).timestamp() * 1000) == clock.ms
    assert row.frame == encode_frame(result.to_event(row.seq, frame.time))
    identity, account, _, sync = (decode_frame(r.frame) for r in store.read_events(0, 4))
    assert identity == IdentityEvent(1, did, identity.time, "frames.test")  # type: ignore[union-attr]
    assert account == AccountEvent(2, did, account.time, True)  # type: ignore[union-attr]
    assert isinstance(sync, SyncEvent) and sync.seq == 4


def test_times_never_go_back(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store)
    clock.ms -= 60_000  # the wall clock stepped back
    _, row = commit(store, did, key, [create("a")])
    times = [r.time_ms for r in store.read_events(0, 100)]
    assert times == sorted(times) and row.time_ms == times[0]


def test_pruning_keeps_the_window_and_never_reuses_a_seq(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store)  # seqs 1-4 at t0
    clock.advance(1000)
    commit(store, did, key, [create("a")])  # seq 5 at t0 + 1 s
    clock.advance(1000)
    commit(store, did, key, [create("b")])  # seq 6 at t0 + 2 s
    assert store.prune_events(clock.ms - 1500) == 4
    assert store.oldest_seq() == 5 and store.head_seq() == 6
    assert [r.seq for r in store.read_events(0, 10)] == [5, 6]
    assert store.prune_events(clock.ms + 1) == 2
    assert store.oldest_seq() is None and store.head_seq() == 6
    _, row = commit(store, did, key, [create("c")])
    assert row.seq == 7 and store.oldest_seq() == 7


def test_a_rolled_back_append_leaves_no_gap(store: Store) -> None:
    did, key = new_account(store)
    head = store.head_seq()
    with pytest.raises(KeyError), store.transaction(did) as tx:
        tx.append_event(lambda seq, time: IdentityEvent(seq, did, time))
        raise KeyError("fail after the append")
    assert store.head_seq() == head
    _, row = commit(store, did, key, [])
    assert row.seq == head + 1


def test_several_events_in_one_transaction_are_consecutive(store: Store) -> None:
    did, _ = new_account(store)
    with store.transaction(did) as tx:
        rows = [tx.append_event(lambda seq, time: IdentityEvent(seq, did, time)) for _ in range(3)]
        assert list(tx.events) == rows
    assert [r.seq for r in rows] == [5, 6, 7] and store.read_events(4, 10) == rows


def test_an_event_must_be_built_with_its_seq(store: Store) -> None:
    did, _ = new_account(store)
    with pytest.raises(RuntimeError), store.transaction(did) as tx:
        tx.append_event(lambda seq, time: IdentityEvent(seq + 1, did, time))


def test_an_oversized_frame_is_refused(store: Store) -> None:
    did, _ = new_account(store)
    huge = SyncEvent(0, did, b"\0" * 5_000_001, "3jzfcijpj2z2a", "2024-01-01T00:00:00.000Z")
    with pytest.raises(LimitExceeded), store.transaction(did) as tx:
        tx.append_event(lambda seq, time: SyncEvent(seq, did, huge.blocks, huge.rev, time))
    assert store.head_seq() == 4


def test_deleting_an_account_drops_its_earlier_events(store: Store) -> None:
    gone, _ = new_account(store)
    kept, _ = new_account(store)
    with store.transaction(gone) as tx:
        tx.delete_account()
        tx.append_event(lambda seq, time: AccountEvent(seq, gone, time, False, "deleted"))
    rows = store.read_events(0, 100)
    assert [r.did for r in rows] == [kept] * 4 + [gone]
    last = decode_frame(rows[-1].frame)
    assert isinstance(last, AccountEvent) and last == AccountEvent(9, gone, last.time, False, "deleted")
