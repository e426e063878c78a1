"""Helpers for the store contract tests and the crash writer: accounts, commits, exports, checks."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atrepo.core.car import read_car, write_car
from atrepo.core.cid import CID
from atrepo.core.events import AccountEvent, IdentityEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.verify import RepoSummary, verify_repo_car
from atrepo.store.base import EventRow, Store

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass
class FakeClock:
    """Milliseconds that only move when a test says so.

    It lives here, not in conftest: test folders share one ``conftest`` module
    name, so importing it by name from two folders in one run collides.
    """

    ms: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


def new_did() -> str:
    return "did:plc:" + "".join(secrets.choice(_B32) for _ in range(24))


def post(text: str, **extra: Any) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": "2024-05-01T12:34:56.789Z", **extra}


def create(rkey: str, value: Any = None, collection: str = POST) -> Write:
    return Write("create", collection, rkey, value if value is not None else post(rkey))


def update(rkey: str, value: Any, collection: str = POST) -> Write:
    return Write("update", collection, rkey, value)


def delete(rkey: str, collection: str = POST) -> Write:
    return Write("delete", collection, rkey)


def new_account(
    store: Store,
    did: str | None = None,
    *,
    handle: str | None = None,
    email: str | None = None,
    writes: Sequence[Write] = (),
    key: PrivateKey | None = None,
) -> tuple[str, PrivateKey]:
    """An account with its first commit and the four creation events, in one transaction (accounts.md §2)."""
    did = did or new_did()
    key = key or PrivateKey.generate("k256")
    handle = handle or f"u{secrets.token_hex(4)}.test"
    with store.transaction(did) as tx:
        tx.create_account(handle=handle, signing_key=key.to_bytes(), email=email, password_hash="hash")
        result = Repo.create(did, key, writes)
        tx.apply_commit(result)
        tx.append_event(lambda seq, time: IdentityEvent(seq, did, time, handle))
        tx.append_event(lambda seq, time: AccountEvent(seq, did, time, True))
        tx.append_event(result.to_event)
        tx.append_event(result.to_sync_event)
    return did, key


def commit(
    store: Store,
    did: str,
    key: PrivateKey,
    writes: Sequence[Write],
    *,
    blob_refs: Mapping[str, Iterable[CID]] | None = None,
) -> tuple[CommitResult, EventRow]:
    """One write the way the host makes it: open at the locked head, apply, store, append the event."""
    with store.transaction(did) as tx:
        result = tx.open_repo().apply_writes(writes, key)
        tx.apply_commit(result, blob_refs=blob_refs)
        event = tx.append_event(result.to_event)
    return result, event


def open_repo(store: Store, did: str) -> Repo:
    head = store.repo_head(did)
    assert head is not None
    return Repo.open(store.repo_blocks(did), head.cid)


def export_car(store: Store, did: str) -> bytes:
    """A full export, in the streamable pre-order, as the host will serve ``getRepo``."""
    with store.snapshot():
        repo = open_repo(store, did)
        return write_car([repo.commit.cid], repo.export_blocks())


def stored_blocks(store: Store, did: str) -> dict[CID, bytes]:
    return dict(store.blocks_since(did, None))


def check_repo(store: Store, did: str, key: PrivateKey | None = None) -> dict[str, CID]:
    """Verify the stored repository every way it can be read; return its records (path -> CID).

    The export verifies (signature too, given the key); the tree, the export and the record
    index agree; and the store holds exactly the export's blocks: nothing missing, nothing leaked.
    """
    with store.snapshot():
        car = export_car(store, did)
        summary = RepoSummary()
        verified = dict(
            verify_repo_car(io.BytesIO(car), key=key.public_key if key else None, did=did, summary=summary)
        )
        tree = dict(open_repo(store, did).walk())
        assert verified == tree
        index = {row.path: row.cid for row in all_records(store, did)}
        assert index == tree
        exported = {cid for cid, _ in _car_blocks(car)}
        assert set(stored_blocks(store, did)) == exported
    return tree


def all_records(store: Store, did: str) -> list[Any]:
    out = []
    for collection in store.list_collections(did):
        cursor = None
        while page := store.list_records(did, collection, cursor=cursor, limit=7, reverse=True):
            out += page
            cursor = page[-1].rkey
    return out


def _car_blocks(car: bytes) -> list[tuple[CID, bytes]]:
    _, blocks = read_car(car, max_bytes=len(car))
    return list(blocks.items())
