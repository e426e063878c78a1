"""The per-repository consumer state machine of the firehose (sync.md §7).

A consumer keeps, for each repository, the last verified ``(rev, data,
commit)`` and decides, event by event, whether to advance it, keep it, replace
it or forget it. That policy lives here and only here (as h11's ``_state.py``
owns its connection states), so the relay, the sync consumer and the CLI all
apply the same rules:

* a ``#commit`` that fails verification is dropped and the repository's state
  is forgotten: its place in the chain is unknown until its next valid event,
  which then starts afresh (``INVALID``);
* a valid ``#commit`` with nothing stored is accepted as the first (``FIRST``);
  one that follows the stored state advances it (``NEXT``); one whose rev is
  not after the stored rev is a replay and changes nothing (``DUPLICATE``);
* a valid ``#commit`` that does not follow (``since`` or ``prevData`` differ)
  breaks the chain: its state is stored anyway, as a relay does, so that one
  missing commit fails one event and not every later one, and the outcome
  says a consumer that mirrors records must resync (``OUT_OF_SYNC``);
* a valid ``#sync`` whose rev is after the stored one declares the current
  state and replaces it (``RESTATED``); one that is not later, including one
  that restates the stored state, is a no-op (``DUPLICATE``);
* ``#identity``, ``#account``, ``#info``, error and unknown frames pass
  through untouched; the outcome names them so the caller can act (refresh
  identity caches, update hosting status, stop on an error frame).

Pure: no I/O and no key resolution. The caller passes the signing key it
holds. Sync 1.1 asks a consumer whose signature check fails to re-resolve the
DID once before rejecting: with ``may_retry=True`` a bad signature leaves the
state untouched and returns ``BAD_SIGNATURE``, so the caller can fetch a fresh
key and call ``process`` again (without ``may_retry`` the second time). A
caller that cannot get a usable key at all reports it with ``reject``.

Sequence numbers are not tracked here: cursors and ``seq`` ordering belong to
one upstream connection, while this state belongs to the repository.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from .errors import AtrepoError, InvalidCommitEvent, OutOfSync
from .events import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    Frame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    UnknownFrame,
)
from .keys import PublicKey
from .validate import (
    MAX_FUTURE_REV_SECONDS,
    Chain,
    RepoState,
    VerifiedCommit,
    VerifiedSync,
    check_chain,
    check_sync_chain,
    state_after,
    validate_commit,
    validate_sync,
)

__all__ = ["Outcome", "RepoStates", "RepoTracker", "Verdict"]


class Verdict(enum.Enum):
    """What processing one frame did."""

    FIRST = "first"  # valid #commit, nothing stored before: its state is stored
    NEXT = "next"  # valid #commit that follows the stored state: the state advances
    DUPLICATE = "duplicate"  # valid #commit/#sync not after the stored rev: ignored
    OUT_OF_SYNC = "out-of-sync"  # valid #commit that breaks the chain: its state is stored, resync
    RESTATED = "restated"  # valid #sync after the stored rev: its state replaces the stored one
    INVALID = "invalid"  # #commit/#sync failed verification: dropped, the stored state forgotten
    BAD_SIGNATURE = "bad-signature"  # only with may_retry: refresh the key and process again
    IDENTITY = "identity"  # #identity: refresh identity caches for the DID
    ACCOUNT = "account"  # #account: the hosting status of the DID changed
    INFO = "info"  # #info: an unsequenced notice
    ERROR = "error"  # an error frame: the upstream closes the connection
    UNKNOWN = "unknown"  # an op or type we do not parse: skip it


#: Verdicts after which the repository's stored state is the event's.
_STORES = frozenset({Verdict.FIRST, Verdict.NEXT, Verdict.OUT_OF_SYNC, Verdict.RESTATED})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one frame, with what the caller needs to act on it.

    ``did`` is the frame's account (None for ``#info``, error and unknown
    frames). ``verified`` is the checked value of a valid ``#commit`` or
    ``#sync`` (its ops and blocks are what a mirror applies). ``previous`` and
    ``state`` are the repository's stored state before and after. ``error``
    says why an event was invalid, did not chain, or failed its signature.
    """

    verdict: Verdict
    frame: Frame
    did: str | None = None
    verified: VerifiedCommit | VerifiedSync | None = None
    previous: RepoState | None = None
    state: RepoState | None = None
    error: AtrepoError | None = None

    @property
    def ok(self) -> bool:
        """Whether the frame was fine as a frame: no error, and not an error frame."""
        return self.error is None and self.verdict is not Verdict.ERROR

    @property
    def stored(self) -> bool:
        """Whether the repository's stored state is now the event's."""
        return self.verdict in _STORES

    @property
    def resync(self) -> bool:
        """Whether a consumer that mirrors the records must fetch the repository again (sync.md §9).

        After a chain break, and after a ``#sync`` that moves the repository
        to data it did not derive from the stored state (or had none).
        """
        if self.verdict is Verdict.OUT_OF_SYNC:
            return True
        if self.verdict is Verdict.RESTATED:
            return self.previous is None or self.state is None or self.previous.data != self.state.data
        return False


class RepoStates(Protocol):
    """Where a tracker keeps each repository's state: a ``dict`` will do, a store can back it."""

    def get(self, did: str, /) -> RepoState | None: ...

    def __setitem__(self, did: str, state: RepoState, /) -> None: ...

    def __delitem__(self, did: str, /) -> None: ...


class RepoTracker:
    """Applies sync.md §7 to a stream of frames, one repository state per DID.

    ``states`` is any ``RepoStates`` (a new ``dict`` by default). Events for one
    DID must be processed in stream order; different DIDs are independent.
    ``strict_shape`` and ``max_future_seconds`` go to ``validate_commit``.
    """

    __slots__ = ("_max_future", "_strict_shape", "states")

    def __init__(
        self,
        states: RepoStates | None = None,
        *,
        strict_shape: bool = False,
        max_future_seconds: float = MAX_FUTURE_REV_SECONDS,
    ) -> None:
        self.states: RepoStates = {} if states is None else states
        self._strict_shape = strict_shape
        self._max_future = max_future_seconds

    def process(
        self, frame: Frame, key: PublicKey | None, *, may_retry: bool = False, now: float | None = None
    ) -> Outcome:
        """Verify a ``#commit``/``#sync`` with ``key`` (None skips the signature) and apply its verdict.

        Other frames only get their verdict. ``now`` is the clock for the
        future-rev check (the current time by default).
        """
        if isinstance(frame, CommitEvent):
            return self._commit(frame, key, may_retry, now)
        if isinstance(frame, SyncEvent):
            return self._sync(frame, key, may_retry, now)
        if isinstance(frame, IdentityEvent):
            return Outcome(Verdict.IDENTITY, frame, frame.did)
        if isinstance(frame, AccountEvent):
            return Outcome(Verdict.ACCOUNT, frame, frame.did)
        if isinstance(frame, InfoEvent):
            return Outcome(Verdict.INFO, frame)
        if isinstance(frame, ErrorFrame):
            return Outcome(Verdict.ERROR, frame)
        if isinstance(frame, UnknownFrame):
            return Outcome(Verdict.UNKNOWN, frame)
        raise TypeError(f"not a frame: {type(frame).__name__}")

    def reject(self, event: CommitEvent | SyncEvent, error: AtrepoError) -> Outcome:
        """Record that ``event`` could not be checked (no usable key for its DID): it is invalid.

        Sync 1.1 requires a usable identity before an event is accepted, so
        this is the same verdict as a failed check: the state is forgotten.
        """
        return self._invalid(event, _did_of(event), error)

    # --- per type ---------------------------------------------------------------------

    def _commit(
        self, event: CommitEvent, key: PublicKey | None, may_retry: bool, now: float | None
    ) -> Outcome:
        did = event.repo
        try:
            verified = validate_commit(
                event, key, now=now, max_future_seconds=self._max_future, strict_shape=self._strict_shape
            )
        except AtrepoError as exc:
            return self._failed(event, did, exc, may_retry)
        states = self.states
        previous = states.get(did)
        chain = check_chain(previous, verified)
        if chain is Chain.DUPLICATE:
            return Outcome(Verdict.DUPLICATE, event, did, verified, previous, previous)
        state = state_after(verified)
        states[did] = state
        if chain is Chain.OUT_OF_SYNC:
            assert previous is not None
            error = OutOfSync(
                f"commit since={event.since} prevData={event.prev_data} does not follow "
                f"rev {previous.rev} data {previous.data}"
            )
            return Outcome(Verdict.OUT_OF_SYNC, event, did, verified, previous, state, error)
        verdict = Verdict.FIRST if chain is Chain.FIRST else Verdict.NEXT
        return Outcome(verdict, event, did, verified, previous, state)

    def _sync(self, event: SyncEvent, key: PublicKey | None, may_retry: bool, now: float | None) -> Outcome:
        did = event.did
        try:
            verified = validate_sync(event, key, now=now, max_future_seconds=self._max_future)
        except AtrepoError as exc:
            return self._failed(event, did, exc, may_retry)
        states = self.states
        previous = states.get(did)
        if check_sync_chain(previous, verified) in (Chain.DUPLICATE, Chain.SAME):
            return Outcome(Verdict.DUPLICATE, event, did, verified, previous, previous)
        state = state_after(verified)
        states[did] = state
        return Outcome(Verdict.RESTATED, event, did, verified, previous, state)

    def _failed(
        self, event: CommitEvent | SyncEvent, did: str, error: AtrepoError, may_retry: bool
    ) -> Outcome:
        if may_retry and isinstance(error, InvalidCommitEvent) and error.rule == "signature":
            previous = self.states.get(did)
            return Outcome(Verdict.BAD_SIGNATURE, event, did, None, previous, previous, error)
        return self._invalid(event, did, error)

    def _invalid(self, event: CommitEvent | SyncEvent, did: str, error: AtrepoError) -> Outcome:
        states = self.states
        previous = states.get(did)
        if previous is not None:
            del states[did]
        return Outcome(Verdict.INVALID, event, did, None, previous, None, error)


def _did_of(event: CommitEvent | SyncEvent) -> str:
    return event.repo if isinstance(event, CommitEvent) else event.did
