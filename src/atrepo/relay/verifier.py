"""Commit and sync verification for the relay, in this process or spread over worker processes.

Verification is the relay's CPU: every ``#commit`` has its CAR slice
hash-checked, its signature verified, its ops checked forward and inverted
back to ``prevData`` (``core.validate``). It is also independent per event,
given the signing key, so it can run anywhere. With ``workers=0`` it runs
inline; with ``workers=N`` each event goes to one of N single-process
executors chosen by a hash of its DID, so all of one repository's events go
to the same process (in order, since the relay's lanes keep per-DID order) and
different repositories spread out.

Events cross to a worker as the frame's bytes and the key as its ``did:key``
string, and come back as a small :class:`CommitCheck` (no blocks): pickling a
decoded event and its block map would cost more than the verification saved.
Calls are batched: while one batch is in a worker, the next one gathers, so
the per-call cost of the process boundary is shared by every event in it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from atrepo.core import limits
from atrepo.core.car import read_car
from atrepo.core.cid import CID
from atrepo.core.commit import decode_commit
from atrepo.core.errors import AtrepoError, InvalidCommitEvent
from atrepo.core.events import CommitEvent, SyncEvent, decode_frame
from atrepo.core.keys import PublicKey, parse_did_key
from atrepo.core.validate import validate_commit_parts, validate_sync

__all__ = ["CommitCheck", "Verifier"]

#: Most events sent to a worker process in one call.
BATCH_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class CommitCheck:
    """What the relay keeps of a verified ``#commit`` or ``#sync``: enough to chain and to store."""

    rev: str
    since: str | None
    prev_data: CID | None
    data: CID
    commit: CID
    commit_block: bytes
    warnings: tuple[str, ...] = ()


def check_commit(event: CommitEvent, key: PublicKey | None, now: float | None = None) -> CommitCheck:
    """Run every Sync 1.1 check on ``event`` (raises ``InvalidCommitEvent`` naming the rule)."""
    commit, _, checked = validate_commit_parts(event, key, now=now)
    return CommitCheck(
        commit.rev, event.since, event.prev_data, commit.data, commit.cid, commit.raw, checked.warnings
    )


def check_commit_signed(event: CommitEvent, key: PublicKey | None) -> CommitCheck:
    """The lenient check of a ``#commit`` whose tree checks failed: its CAR, commit and signature only.

    What ``--lenient`` relays (as the reference relay does during its rollout)
    must still be the DID's signed commit; only the ops-to-tree agreement is
    let go. Raises ``InvalidCommitEvent``.
    """
    try:
        roots, blocks = read_car(event.blocks, max_bytes=limits.MAX_COMMIT_BLOCKS_BYTES)
    except AtrepoError as exc:
        raise InvalidCommitEvent("car", str(exc)) from None
    raw = blocks.get(event.commit)
    if roots != [event.commit] or raw is None:
        raise InvalidCommitEvent("car", f"the CAR needs one root, the commit {event.commit}, and its block")
    try:
        commit = decode_commit(raw, event.commit)
    except AtrepoError as exc:
        raise InvalidCommitEvent("commit", str(exc)) from None
    if commit.did != event.repo or commit.rev != event.rev:
        raise InvalidCommitEvent("repo", "the commit's did and rev are not the message's")
    if key is not None:
        try:
            commit.verify(key)
        except AtrepoError as exc:
            raise InvalidCommitEvent("signature", str(exc)) from None
    return CommitCheck(commit.rev, event.since, event.prev_data, commit.data, commit.cid, commit.raw)


def check_sync(event: SyncEvent, key: PublicKey | None, now: float | None = None) -> CommitCheck:
    """Run the ``#sync`` checks on ``event`` (raises ``InvalidCommitEvent``)."""
    verified = validate_sync(event, key, now=now)
    commit = verified.commit
    return CommitCheck(verified.rev, None, None, commit.data, commit.cid, commit.raw)


# --- the worker process's side -------------------------------------------------------------

_KEYS: dict[str, PublicKey] = {}

#: One outcome crossing back: ("ok", rev, since, prevData, data, commit, commit block, warnings)
#: or ("err", rule, message).
_Result = tuple[object, ...]


def _key(did_key: str | None) -> PublicKey | None:
    if did_key is None:
        return None
    key = _KEYS.get(did_key)
    if key is None:
        if len(_KEYS) > 100_000:
            _KEYS.clear()
        key = _KEYS[did_key] = parse_did_key(did_key)
    return key


def _verify_batch(items: Sequence[tuple[bytes, str | None]]) -> list[_Result]:
    out: list[_Result] = []
    for raw, did_key in items:
        try:
            frame = decode_frame(raw)
            if isinstance(frame, CommitEvent):
                check = check_commit(frame, _key(did_key))
            elif isinstance(frame, SyncEvent):
                check = check_sync(frame, _key(did_key))
            else:
                raise InvalidCommitEvent("car", f"not a #commit or #sync: {type(frame).__name__}")
        except InvalidCommitEvent as exc:
            text = str(exc)
            prefix = f"{exc.rule}: "
            out.append(("err", exc.rule, text[len(prefix) :] if text.startswith(prefix) else text))
            continue
        except AtrepoError as exc:
            out.append(("err", "car", str(exc)))
            continue
        out.append(
            (
                "ok",
                check.rev,
                check.since,
                bytes(check.prev_data) if check.prev_data is not None else None,
                bytes(check.data),
                bytes(check.commit),
                check.commit_block,
                check.warnings,
            )
        )
    return out


def _from_result(result: _Result) -> CommitCheck:
    if result[0] == "err":
        raise InvalidCommitEvent(str(result[1]), str(result[2]))
    _, rev, since, prev, data, commit, block, warnings = result
    assert isinstance(rev, str) and isinstance(data, bytes) and isinstance(commit, bytes)
    assert isinstance(block, bytes) and isinstance(warnings, tuple)
    return CommitCheck(
        rev,
        since if isinstance(since, str) else None,
        CID(prev) if isinstance(prev, bytes) else None,
        CID(data),
        CID(commit),
        block,
        warnings,
    )


# --- the relay's side ----------------------------------------------------------------------


class _Partition:
    """One worker process and the events queued for it."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
        self.queue: list[tuple[bytes, str | None, asyncio.Future[CommitCheck]]] = []
        self.busy = False
        self.calls = 0

    def submit(self, raw: bytes, did_key: str | None) -> asyncio.Future[CommitCheck]:
        future: asyncio.Future[CommitCheck] = asyncio.get_running_loop().create_future()
        self.queue.append((raw, did_key, future))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                batch, self.queue = self.queue[:BATCH_MAX], self.queue[BATCH_MAX:]
                self.calls += 1
                try:
                    results = await loop.run_in_executor(
                        self.executor, _verify_batch, [(raw, key) for raw, key, _ in batch]
                    )
                except Exception as exc:  # the worker died: fail this batch, the next call starts a new one
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    try:
                        future.set_result(_from_result(result))
                    except InvalidCommitEvent as exc:
                        future.set_exception(exc)
        finally:
            self.busy = False


class Verifier:
    """Verifies ``#commit``/``#sync`` events inline (``workers=0``) or on worker processes by DID hash."""

    def __init__(self, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        self.workers = workers
        context = multiprocessing.get_context("forkserver") if workers else None
        self._partitions = [_Partition(context) for _ in range(workers)] if context is not None else []

    def partition_of(self, did: str) -> int:
        """Which worker verifies ``did``'s events (stable across runs: crc32, not ``hash``)."""
        return zlib.crc32(did.encode()) % self.workers if self.workers else 0

    def start_commit(
        self, event: CommitEvent, raw: bytes, key: PublicKey
    ) -> asyncio.Future[CommitCheck] | None:
        """Start verifying ``event`` in its worker now (None inline: nothing gains from starting early).

        Verification needs no per-DID order, only the key: the relay starts it
        as events arrive (``Subscriber.prefetch``), so a worker has many events
        of one repository in hand while the repository's lane applies them
        one by one.
        """
        if not self._partitions:
            return None
        return self._partitions[self.partition_of(event.repo)].submit(raw, key.did_key())

    async def commit(self, event: CommitEvent, raw: bytes, key: PublicKey | None) -> CommitCheck:
        """Verify a ``#commit``; raises ``InvalidCommitEvent``."""
        if not self._partitions:
            return check_commit(event, key)
        partition = self._partitions[self.partition_of(event.repo)]
        return await partition.submit(raw, key.did_key() if key is not None else None)

    async def sync(self, event: SyncEvent, raw: bytes, key: PublicKey | None) -> CommitCheck:
        """Verify a ``#sync``; raises ``InvalidCommitEvent``."""
        if not self._partitions:
            return check_sync(event, key)
        partition = self._partitions[self.partition_of(event.did)]
        return await partition.submit(raw, key.did_key() if key is not None else None)

    def close(self) -> None:
        for partition in self._partitions:
            partition.executor.shutdown(wait=False, cancel_futures=True)
