"""The consumer state machine: every transition of sync.md §7, on events from our own producer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping

import pytest

from atrepo.core.cid import CID
from atrepo.core.errors import InvalidCommitEvent, InvalidEvent, OutOfSync
from atrepo.core.events import (
    AccountEvent,
    ErrorFrame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    UnknownFrame,
)
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.tracker import Outcome, RepoTracker, Verdict
from atrepo.core.validate import RepoState, VerifiedCommit, VerifiedSync, state_after

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
OTHER = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
POST = "app.bsky.feed.post"
TIME = "2024-05-01T12:34:56.789Z"
KEY = PrivateKey.generate("k256")
PUB = KEY.public_key
WRONG = PrivateKey.generate("k256").public_key


def history(did: str, n: int) -> list[CommitResult]:
    """A repository's first commit and ``n`` more, one write each."""
    results = [Repo.create(did, KEY, [Write("create", POST, "first", {"$type": POST, "text": "0"})])]
    for i in range(n):
        results.append(
            results[-1].repo.apply_writes([Write("create", POST, f"p{i}", {"$type": POST, "i": i})], KEY)
        )
    return results


RESULTS = history(DID, 4)
COMMITS = [r.to_event(i + 1, TIME) for i, r in enumerate(RESULTS)]


def state_of(result: CommitResult) -> RepoState:
    return RepoState(result.rev, result.repo.data, result.commit.cid)


def tracker_at(result: CommitResult | None = None) -> RepoTracker:
    tracker = RepoTracker()
    if result is not None:
        tracker.states[DID] = state_of(result)
    return tracker


def check(outcome: Outcome, verdict: Verdict, state: RepoState | None, *, error: type | None = None) -> None:
    assert outcome.verdict is verdict, outcome
    assert outcome.state == state
    if error is None:
        assert outcome.error is None and outcome.ok
    else:
        assert isinstance(outcome.error, error) and not outcome.ok


# --- #commit ---------------------------------------------------------------------------------------


def test_first_then_next() -> None:
    tracker = tracker_at()
    first = tracker.process(COMMITS[0], PUB)
    check(first, Verdict.FIRST, state_of(RESULTS[0]))
    assert first.previous is None and first.did == DID and first.stored and not first.resync
    assert isinstance(first.verified, VerifiedCommit) and first.verified.rev == RESULTS[0].rev
    for i in range(1, len(COMMITS)):
        out = tracker.process(COMMITS[i], PUB)
        check(out, Verdict.NEXT, state_of(RESULTS[i]))
        assert out.previous == state_of(RESULTS[i - 1]) and out.stored and not out.resync
    assert tracker.states.get(DID) == state_of(RESULTS[-1])


def test_first_commit_in_the_middle_of_a_history() -> None:
    """With nothing stored, any valid commit starts the chain (sync.md §7 step 9)."""
    out = tracker_at().process(COMMITS[2], PUB)
    check(out, Verdict.FIRST, state_of(RESULTS[2]))


@pytest.mark.parametrize("replayed", [1, 3])
def test_duplicate_is_ignored(replayed: int) -> None:
    tracker = tracker_at(RESULTS[3])
    out = tracker.process(COMMITS[replayed], PUB)
    check(out, Verdict.DUPLICATE, state_of(RESULTS[3]))
    assert out.previous == state_of(RESULTS[3]) and not out.stored and not out.resync
    assert out.verified is not None  # a duplicate is still verified first
    assert tracker.states.get(DID) == state_of(RESULTS[3])


def test_chain_break_stores_the_new_state_and_asks_for_resync() -> None:
    tracker = tracker_at(RESULTS[1])
    out = tracker.process(COMMITS[3], PUB)  # COMMITS[2] was missed
    check(out, Verdict.OUT_OF_SYNC, state_of(RESULTS[3]), error=OutOfSync)
    assert out.previous == state_of(RESULTS[1]) and out.stored and out.resync
    assert "does not follow" in str(out.error)
    assert tracker.states.get(DID) == state_of(RESULTS[3])
    # so the next commit chains again
    check(tracker.process(COMMITS[4], PUB), Verdict.NEXT, state_of(RESULTS[4]))


def test_invalid_commit_drops_the_state_and_the_next_starts_afresh() -> None:
    tracker = tracker_at(RESULTS[1])
    op = COMMITS[2].ops[0]
    tampered = dataclasses.replace(COMMITS[2], ops=(dataclasses.replace(op, cid=CID.for_raw(b"x")),))
    out = tracker.process(tampered, PUB)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)
    assert out.error is not None and out.error.rule == "forward"
    assert out.previous == state_of(RESULTS[1]) and out.verified is None and not out.stored
    assert tracker.states.get(DID) is None
    check(tracker.process(COMMITS[3], PUB), Verdict.FIRST, state_of(RESULTS[3]))


def test_invalid_commit_with_nothing_stored() -> None:
    tracker = tracker_at()
    out = tracker.process(dataclasses.replace(COMMITS[0], rebase=True), PUB)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)
    assert out.previous is None and tracker.states.get(DID) is None


def test_bad_signature_without_retry_is_invalid() -> None:
    tracker = tracker_at(RESULTS[1])
    out = tracker.process(COMMITS[2], WRONG)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)
    assert out.error is not None and out.error.rule == "signature"
    assert tracker.states.get(DID) is None


def test_bad_signature_with_retry_keeps_the_state_for_a_second_try() -> None:
    tracker = tracker_at(RESULTS[1])
    out = tracker.process(COMMITS[2], WRONG, may_retry=True)
    check(out, Verdict.BAD_SIGNATURE, state_of(RESULTS[1]), error=InvalidCommitEvent)
    assert out.previous == state_of(RESULTS[1]) and not out.stored
    assert tracker.states.get(DID) == state_of(RESULTS[1])
    # the caller refreshed the key: the same event now chains
    check(tracker.process(COMMITS[2], PUB), Verdict.NEXT, state_of(RESULTS[2]))
    # still wrong after the refresh: invalid, state dropped
    tracker = tracker_at(RESULTS[1])
    assert tracker.process(COMMITS[2], WRONG, may_retry=True).verdict is Verdict.BAD_SIGNATURE
    check(tracker.process(COMMITS[2], WRONG), Verdict.INVALID, None, error=InvalidCommitEvent)
    assert tracker.states.get(DID) is None


def test_may_retry_only_concerns_signatures() -> None:
    tracker = tracker_at(RESULTS[1])
    out = tracker.process(dataclasses.replace(COMMITS[2], too_big=True), PUB, may_retry=True)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)


def test_reject_when_no_key_can_be_had() -> None:
    tracker = tracker_at(RESULTS[1])
    error = InvalidEvent("no key for the DID")
    out = tracker.reject(COMMITS[2], error)
    check(out, Verdict.INVALID, None, error=InvalidEvent)
    assert out.error is error and out.did == DID and out.previous == state_of(RESULTS[1])
    assert tracker.states.get(DID) is None
    tracker = tracker_at(RESULTS[1])
    assert tracker.reject(RESULTS[1].to_sync_event(9, TIME), error).verdict is Verdict.INVALID
    assert tracker.states.get(DID) is None


def test_no_key_skips_the_signature() -> None:
    check(tracker_at().process(COMMITS[0], None), Verdict.FIRST, state_of(RESULTS[0]))


def test_future_rev_uses_the_given_clock() -> None:
    out = tracker_at().process(COMMITS[0], PUB, now=0.0)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)
    assert out.error is not None and out.error.rule == "future-rev"
    tracker = RepoTracker(max_future_seconds=1e12)
    check(tracker.process(COMMITS[0], PUB, now=0.0), Verdict.FIRST, state_of(RESULTS[0]))


def test_repositories_are_independent() -> None:
    others = history(OTHER, 1)
    tracker = tracker_at(RESULTS[1])
    check(tracker.process(others[0].to_event(10, TIME), PUB), Verdict.FIRST, state_of(others[0]))
    tracker.process(dataclasses.replace(others[1].to_event(11, TIME), rebase=True), PUB)
    assert tracker.states.get(OTHER) is None
    assert tracker.states.get(DID) == state_of(RESULTS[1])


# --- #sync -----------------------------------------------------------------------------------------


def test_sync_with_nothing_stored() -> None:
    tracker = tracker_at()
    out = tracker.process(RESULTS[2].to_sync_event(5, TIME), PUB)
    check(out, Verdict.RESTATED, state_of(RESULTS[2]))
    assert isinstance(out.verified, VerifiedSync) and out.stored and out.resync
    check(tracker.process(COMMITS[3], PUB), Verdict.NEXT, state_of(RESULTS[3]))


def test_sync_after_a_gap_restates_and_asks_for_resync() -> None:
    tracker = tracker_at(RESULTS[0])
    out = tracker.process(RESULTS[3].to_sync_event(50, TIME), PUB)
    check(out, Verdict.RESTATED, state_of(RESULTS[3]))
    assert out.previous == state_of(RESULTS[0]) and out.resync
    check(tracker.process(COMMITS[4], PUB), Verdict.NEXT, state_of(RESULTS[4]))


def test_sync_of_the_current_state_is_a_no_op() -> None:
    tracker = tracker_at(RESULTS[2])
    out = tracker.process(RESULTS[2].to_sync_event(5, TIME), PUB)
    check(out, Verdict.DUPLICATE, state_of(RESULTS[2]))
    assert not out.stored and not out.resync


def test_older_sync_is_ignored() -> None:
    tracker = tracker_at(RESULTS[3])
    check(tracker.process(RESULTS[1].to_sync_event(5, TIME), PUB), Verdict.DUPLICATE, state_of(RESULTS[3]))
    assert tracker.states.get(DID) == state_of(RESULTS[3])


def test_resigned_sync_over_the_same_data_needs_no_resync() -> None:
    resigned = RESULTS[2].repo.resign(KEY)
    tracker = tracker_at(RESULTS[2])
    out = tracker.process(resigned.to_sync_event(6, TIME), PUB)
    assert resigned.repo.data == RESULTS[2].repo.data and resigned.rev > RESULTS[2].rev
    check(out, Verdict.RESTATED, state_of(resigned))
    assert out.stored and not out.resync


def test_invalid_sync_drops_the_state() -> None:
    tracker = tracker_at(RESULTS[1])
    good = RESULTS[2].to_sync_event(9, TIME)
    out = tracker.process(SyncEvent(9, DID, good.blocks, RESULTS[1].rev, TIME), PUB)
    check(out, Verdict.INVALID, None, error=InvalidCommitEvent)
    assert out.error is not None and out.error.rule == "rev"
    assert tracker.states.get(DID) is None


def test_sync_bad_signature_with_retry() -> None:
    tracker = tracker_at(RESULTS[1])
    event = RESULTS[2].to_sync_event(9, TIME)
    out = tracker.process(event, WRONG, may_retry=True)
    check(out, Verdict.BAD_SIGNATURE, state_of(RESULTS[1]), error=InvalidCommitEvent)
    check(tracker.process(event, PUB), Verdict.RESTATED, state_of(RESULTS[2]))


# --- frames that pass through ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "verdict", "did"),
    [
        (IdentityEvent(7, DID, TIME, "alice.test"), Verdict.IDENTITY, DID),
        (AccountEvent(8, DID, TIME, False, "deactivated"), Verdict.ACCOUNT, DID),
        (InfoEvent("OutdatedCursor"), Verdict.INFO, None),
        (UnknownFrame(1, "#future", b"\xa0"), Verdict.UNKNOWN, None),
    ],
    ids=["identity", "account", "info", "unknown"],
)
def test_passthrough_frames_leave_the_state_alone(frame: object, verdict: Verdict, did: str | None) -> None:
    tracker = tracker_at(RESULTS[1])
    out = tracker.process(frame, PUB)  # type: ignore[arg-type]
    assert (out.verdict, out.did, out.error, out.ok, out.stored, out.resync) == (
        verdict,
        did,
        None,
        True,
        False,
        False,
    )
    assert out.frame is frame
    assert tracker.states.get(DID) == state_of(RESULTS[1])


def test_error_frame() -> None:
    out = tracker_at().process(ErrorFrame("FutureCursor"), None)
    assert out.verdict is Verdict.ERROR and not out.ok and out.error is None


def test_not_a_frame() -> None:
    with pytest.raises(TypeError):
        tracker_at().process(object(), None)  # type: ignore[arg-type]


# --- pluggable state storage -----------------------------------------------------------------------


class CountingStates(MutableMapping[str, RepoState]):
    """A stand-in for a store: counts writes and deletes."""

    def __init__(self) -> None:
        self.data: dict[str, RepoState] = {}
        self.writes = 0
        self.deletes = 0

    def __getitem__(self, did: str) -> RepoState:
        return self.data[did]

    def __setitem__(self, did: str, state: RepoState) -> None:
        self.writes += 1
        self.data[did] = state

    def __delitem__(self, did: str) -> None:
        self.deletes += 1
        del self.data[did]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_states_can_live_elsewhere() -> None:
    store = CountingStates()
    tracker = RepoTracker(store)
    for event in COMMITS[:3]:
        tracker.process(event, PUB)
    tracker.process(COMMITS[1], PUB)  # a duplicate writes nothing
    assert store.writes == 3 and store.data[DID] == state_of(RESULTS[2])
    tracker.process(dataclasses.replace(COMMITS[3], rebase=True), PUB)
    assert store.deletes == 1 and DID not in store.data
    tracker.process(dataclasses.replace(COMMITS[4], rebase=True), PUB)
    assert store.deletes == 1  # nothing to forget


def test_state_after_matches_the_stored_state() -> None:
    tracker = tracker_at()
    out = tracker.process(COMMITS[0], PUB)
    assert out.verified is not None and out.state == state_after(out.verified)
