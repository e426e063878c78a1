"""The host's record write path on each store backend: every op, swaps, limits, validation, blobs.

Each test ends, where it wrote, by reading the store back every way a client
or a relay can: the exported repository verifies and equals the record index,
and every ``#commit``/``#sync`` in the event log passes Sync 1.1 validation,
chained from the account's genesis event.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import (
    AccountTakedown,
    AtrepoError,
    BlobNotFound,
    InvalidLexiconData,
    InvalidRequest,
    InvalidSwap,
    LimitExceeded,
    RepoDeactivated,
    RepoNotFound,
    WriteAborted,
)
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.core.syntax import is_valid_tid
from atrepo.core.tid import tid_from_parts
from atrepo.core.tracker import RepoTracker, Verdict
from atrepo.core.verify import verify_repo_car
from atrepo.host.writes import (
    TREE_REUSES,
    UNCHECKED,
    CreateOp,
    DeleteOp,
    RepoWriter,
    UpdateOp,
    WriteOp,
    ops_from_apply_writes,
)
from atrepo.lexicons import builtin_registry
from atrepo.store.base import AccountStatus, Store
from atrepo.store.postgres import open_host_store
from atrepo.store.sqlite import SQLiteStore

POST = "app.bsky.feed.post"
PROFILE = "app.bsky.actor.profile"
FOLLOW = "app.bsky.graph.follow"
LIKE = "app.bsky.feed.like"
UNKNOWN = "com.example.thing"
AW = "com.atproto.repo.applyWrites"
NOW = "2024-05-01T12:34:56.789Z"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"

#: One registry for the module: its validators compile on first use.
REGISTRY = builtin_registry()


# --- helpers (test_writes_properties imports them) ------------------------------------------------


def k(name: str) -> str:
    """A TID record key named by ``name`` (posts and most app records need TID keys)."""
    digest = hashlib.sha256(name.encode()).digest()
    return tid_from_parts(int.from_bytes(digest[:8]) % 2**52, 0)


def path(name: str, collection: str = POST) -> str:
    return f"{collection}/{k(name)}"


def post(text: str, **extra: Any) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": NOW, **extra}


def follow(subject: str) -> dict[str, Any]:
    return {"$type": FOLLOW, "subject": subject, "createdAt": NOW}


def new_did() -> str:
    return "did:plc:" + "".join(secrets.choice(_B32) for _ in range(24))


def blob(cid: CID, size: int, mime: str = "image/png") -> dict[str, Any]:
    return {"$type": "blob", "ref": cid, "mimeType": mime, "size": size}


def with_image(text: str, cid: CID, size: int, mime: str = "image/png") -> dict[str, Any]:
    images = {"$type": "app.bsky.embed.images", "images": [{"image": blob(cid, size, mime), "alt": ""}]}
    return post(text, embed=images)


@dataclass
class Account:
    store: Store
    did: str
    key: PrivateKey


def new_account(store: Store, status: AccountStatus = "active") -> Account:
    """An account with its genesis commit and creation events, as the host makes it (accounts.md §2)."""
    did = new_did()
    key = PrivateKey.generate("k256")
    handle = f"u{secrets.token_hex(4)}.test"
    with store.transaction(did) as tx:
        tx.create_account(handle=handle, signing_key=key.to_bytes(), status=status)
        result = Repo.create(did, key)
        tx.apply_commit(result)
        tx.append_event(lambda seq, time: IdentityEvent(seq, did, time, handle))
        tx.append_event(lambda seq, time: AccountEvent(seq, did, time, status == "active"))
        tx.append_event(result.to_event)
        tx.append_event(result.to_sync_event)
    return Account(store, did, key)


def upload(store: Store, did: str, data: bytes, mime: str = "image/png") -> CID:
    cid, size = store.blob_files.write([data])
    with store.transaction(did) as tx:
        tx.add_blob(cid, mime, size)
    return cid


def records(store: Store, did: str) -> dict[str, CID]:
    """The record index: path -> CID."""
    out: dict[str, CID] = {}
    for collection in store.list_collections(did):
        cursor = None
        while page := store.list_records(did, collection, cursor=cursor, limit=50, reverse=True):
            out.update((row.path, row.cid) for row in page)
            cursor = page[-1].rkey
    return out


def value_at(store: Store, did: str, path: str) -> Any:
    head = store.repo_head(did)
    assert head is not None
    collection, _, rkey = path.partition("/")
    found = Repo.open(store.repo_blocks(did), head.cid).get_record(collection, rkey)
    return None if found is None else found[1]


def state(store: Store, did: str) -> tuple[Any, ...]:
    """Everything a failed write must leave as it was."""
    events = store.read_events(0, 10_000)
    return (store.repo_head(did), records(store, did), store.head_seq(), [e.seq for e in events])


def check_repo(store: Store, did: str, key: PrivateKey) -> dict[str, CID]:
    """The stored repository opens, exports and verifies; its tree equals the record index."""
    with store.snapshot():
        head = store.repo_head(did)
        assert head is not None
        repo = Repo.open(store.repo_blocks(did), head.cid)
        car = write_car([repo.commit.cid], repo.export_blocks())
        verified = dict(verify_repo_car(io.BytesIO(car), key=key.public_key, did=did))
        tree = dict(repo.walk())
        index = records(store, did)
    assert verified == tree == index
    return tree


def check_events(store: Store, did: str, key: PrivateKey) -> list[CommitEvent]:
    """Every #commit and #sync of the DID passes Sync 1.1 validation, each chained to the one before."""
    tracker = RepoTracker()
    commits: list[CommitEvent] = []
    last_seq = 0
    for row in store.read_events(0, 100_000):
        assert row.seq > last_seq
        last_seq = row.seq
        if row.did != did:
            continue
        frame = decode_frame(row.frame)
        outcome = tracker.process(frame, key.public_key)
        assert outcome.ok, outcome.error
        if isinstance(frame, CommitEvent):
            expected = Verdict.FIRST if not commits else Verdict.NEXT
            assert outcome.verdict is expected, (outcome.verdict, outcome.error)
            commits.append(frame)
        elif isinstance(frame, SyncEvent):
            assert outcome.verdict in (Verdict.DUPLICATE, Verdict.RESTATED)
    head = store.repo_head(did)
    assert head is not None and commits and commits[-1].commit == head.cid and commits[-1].rev == head.rev
    return commits


def check_all(account: Account) -> dict[str, CID]:
    check_events(account.store, account.did, account.key)
    return check_repo(account.store, account.did, account.key)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, database: str | None) -> Iterator[Store]:
    """The host's store on each backend, as ``atrepo serve`` opens it."""
    opened = open_host_store(tmp_path / "data", database)
    yield opened
    opened.close()


@pytest.fixture
def writer() -> RepoWriter:
    return RepoWriter(REGISTRY)


@pytest.fixture
def alice(store: Store) -> Account:
    return new_account(store)


# --- createRecord ---------------------------------------------------------------------------------


def test_create_record_with_a_new_tid(store: Store, writer: RepoWriter, alice: Account) -> None:
    before = store.head_seq()
    out = writer.create_record(store, alice.did, alice.key, POST, {"text": "hi", "createdAt": NOW})
    (result,) = out.results
    rkey = result.uri.rsplit("/", 1)[1]
    assert is_valid_tid(rkey) and result.uri == f"at://{alice.did}/{POST}/{rkey}"
    assert (result.action, result.validation_status, result.applied) == ("create", "valid", True)
    assert value_at(store, alice.did, f"{POST}/{rkey}") == post("hi")  # $type filled in
    head = store.repo_head(alice.did)
    assert (
        out.commit is not None
        and head is not None
        and (out.commit.cid, out.commit.rev) == (head.cid, head.rev)
    )
    assert out.seq == store.head_seq() == before + 1 and out.replaced == ()
    assert result.to_json() == {"uri": result.uri, "cid": str(result.cid), "validationStatus": "valid"}
    assert out.commit.to_json() == {"cid": str(head.cid), "rev": head.rev}
    assert records(store, alice.did) == {f"{POST}/{rkey}": result.cid}
    check_all(alice)


def test_generated_keys_and_revs_increase(store: Store, writer: RepoWriter, alice: Account) -> None:
    outs = [writer.create_record(store, alice.did, alice.key, POST, post(str(i))) for i in range(5)]
    rkeys = [o.results[0].uri.rsplit("/", 1)[1] for o in outs]
    revs = [o.commit.rev for o in outs if o.commit is not None]
    assert rkeys == sorted(rkeys) and len(set(rkeys)) == 5
    assert revs == sorted(revs) and len(set(revs)) == 5
    assert [o.seq for o in outs] == sorted(o.seq for o in outs if o.seq is not None)
    check_all(alice)


def test_create_record_on_an_existing_path_is_refused(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    writer.create_record(store, alice.did, alice.key, POST, post("one"), rkey="3jzfcijpj2z2a")
    before = state(store, alice.did)
    with pytest.raises(InvalidRequest, match="Record already exists") as info:
        writer.create_record(store, alice.did, alice.key, POST, post("two"), rkey="3jzfcijpj2z2a")
    assert info.value.xrpc_error == "InvalidRequest" and info.value.rule == "exists"
    assert state(store, alice.did) == before
    check_all(alice)


# --- putRecord ------------------------------------------------------------------------------------


def test_put_record_creates_then_updates_then_is_a_no_op(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    created = writer.put_record(store, alice.did, alice.key, PROFILE, "self", {"displayName": "A"})
    assert created.results[0].action == "create" and created.commit is not None
    first_cid = created.results[0].cid
    updated = writer.put_record(store, alice.did, alice.key, PROFILE, "self", {"displayName": "B"})
    (result,) = updated.results
    assert result.action == "update" and result.applied and updated.commit is not None
    assert updated.result is not None and updated.result.ops[0].prev == first_cid
    before = state(store, alice.did)
    same = writer.put_record(store, alice.did, alice.key, PROFILE, "self", {"displayName": "B"})
    (noop,) = same.results
    assert same.commit is None and same.event is None and same.seq is None and same.result is None
    assert (noop.action, noop.applied, noop.cid, noop.validation_status) == (
        "update",
        False,
        result.cid,
        "valid",
    )
    assert state(store, alice.did) == before
    check_all(alice)


def test_put_of_the_same_record_ignores_swaps_as_the_reference_does(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    writer.put_record(store, alice.did, alice.key, POST, k("a"), post("x"))
    before = state(store, alice.did)
    wrong = CID.for_dag_cbor(b"\xa0")
    out = writer.put_record(
        store, alice.did, alice.key, POST, k("a"), post("x"), swap_record=wrong, swap_commit=wrong
    )
    assert out.commit is None and state(store, alice.did) == before


def test_put_record_swaps(store: Store, writer: RepoWriter, alice: Account) -> None:
    did, key = alice.did, alice.key
    wrong = CID.for_dag_cbor(b"\xa0")
    # null: the record must not exist
    first = writer.put_record(store, did, key, POST, k("a"), post("1"), swap_record=None)
    cid1 = first.results[0].cid
    assert cid1 is not None
    with pytest.raises(InvalidSwap):
        writer.put_record(store, did, key, POST, k("a"), post("2"), swap_record=None)
    # a CID: the record must exist with exactly it
    with pytest.raises(InvalidSwap) as info:
        writer.put_record(store, did, key, POST, k("a"), post("2"), swap_record=wrong)
    assert info.value.xrpc_error == "InvalidSwap" and info.value.http_status == 400
    with pytest.raises(InvalidSwap):
        writer.put_record(store, did, key, POST, k("missing"), post("2"), swap_record=cid1)
    out = writer.put_record(store, did, key, POST, k("a"), post("2"), swap_record=cid1)
    assert out.commit is not None and out.results[0].action == "update"
    assert value_at(store, did, path("a")) == post("2")
    check_all(alice)


# --- deleteRecord ---------------------------------------------------------------------------------


def test_delete_record(store: Store, writer: RepoWriter, alice: Account) -> None:
    cid = writer.put_record(store, alice.did, alice.key, POST, k("a"), post("x")).results[0].cid
    out = writer.delete_record(store, alice.did, alice.key, POST, k("a"), swap_record=cid)
    (result,) = out.results
    assert (result.action, result.cid, result.applied, result.validation_status) == (
        "delete",
        None,
        True,
        None,
    )
    assert out.result is not None and out.result.ops[0].prev == cid
    assert records(store, alice.did) == {}
    check_all(alice)


def test_deleting_a_missing_record_is_a_success_without_commit(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    before = state(store, alice.did)
    wrong = CID.for_dag_cbor(b"\xa0")
    # the reference answers before looking at either swap
    out = writer.delete_record(
        store, alice.did, alice.key, POST, k("nope"), swap_record=wrong, swap_commit=wrong
    )
    assert out.commit is None and out.results[0].applied is False and state(store, alice.did) == before


def test_delete_record_swaps(store: Store, writer: RepoWriter, alice: Account) -> None:
    writer.put_record(store, alice.did, alice.key, POST, k("a"), post("x"))
    before = state(store, alice.did)
    with pytest.raises(InvalidSwap, match="Record was at"):
        writer.delete_record(store, alice.did, alice.key, POST, k("a"), swap_record=CID.for_dag_cbor(b"\xa0"))
    with pytest.raises(InvalidSwap):
        writer.delete_record(store, alice.did, alice.key, POST, k("a"), swap_record=None)
    assert state(store, alice.did) == before


# --- swapCommit -----------------------------------------------------------------------------------


def test_swap_commit(store: Store, writer: RepoWriter, alice: Account) -> None:
    head = store.repo_head(alice.did)
    assert head is not None
    out = writer.create_record(store, alice.did, alice.key, POST, post("a"), swap_commit=head.cid)
    assert out.commit is not None
    before = state(store, alice.did)
    with pytest.raises(InvalidSwap, match=f"Commit was at {out.commit.cid}"):
        writer.create_record(store, alice.did, alice.key, POST, post("b"), swap_commit=head.cid)
    with pytest.raises(InvalidSwap):
        writer.delete_record(
            store, alice.did, alice.key, POST, out.results[0].uri.rsplit("/", 1)[1], swap_commit=head.cid
        )
    assert state(store, alice.did) == before
    check_all(alice)


# --- applyWrites ----------------------------------------------------------------------------------


def test_apply_writes_mixed_batch(store: Store, writer: RepoWriter, alice: Account) -> None:
    writer.put_record(store, alice.did, alice.key, POST, k("old"), post("old"))
    writer.put_record(store, alice.did, alice.key, POST, k("gone"), post("gone"))
    body = [
        {"$type": f"{AW}#create", "collection": POST, "value": {"text": "new", "createdAt": NOW}},
        {"$type": f"{AW}#create", "collection": POST, "rkey": k("named"), "value": post("named")},
        {"$type": f"{AW}#update", "collection": POST, "rkey": k("old"), "value": post("changed")},
        {"$type": f"{AW}#delete", "collection": POST, "rkey": k("gone")},
        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": "k", "value": {"anything": [1, 2]}},
    ]
    out = writer.apply_writes(store, alice.did, alice.key, body)
    assert out.commit is not None and len(out.results) == 5
    assert [r.action for r in out.results] == ["create", "create", "update", "delete", "create"]
    assert [r.validation_status for r in out.results] == ["valid", "valid", "valid", None, "unknown"]
    replies = [r.to_apply_writes_result() for r in out.results]
    assert [r["$type"].split("#")[1] for r in replies] == [
        "createResult",
        "createResult",
        "updateResult",
        "deleteResult",
        "createResult",
    ]
    assert replies[3] == {"$type": f"{AW}#deleteResult"}
    assert replies[4] == {
        "$type": f"{AW}#createResult",
        "uri": f"at://{alice.did}/{UNKNOWN}/k",
        "cid": str(out.results[4].cid),
        "validationStatus": "unknown",
    }
    assert out.result is not None and len(out.result.ops) == 5  # one commit, one event for all
    index = check_all(alice)
    assert set(index) == {
        out.results[0].uri.split("/", 3)[3],
        path("named"),
        path("old"),
        f"{UNKNOWN}/k",
    }


def test_apply_writes_is_strict_about_missing_and_existing_records(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    writer.put_record(store, alice.did, alice.key, POST, k("here"), post("here"))
    before = state(store, alice.did)
    cases = [
        ({"$type": f"{AW}#update", "collection": POST, "rkey": k("nope"), "value": post("x")}, "update"),
        ({"$type": f"{AW}#delete", "collection": POST, "rkey": k("nope")}, "delete"),
        (
            {"$type": f"{AW}#create", "collection": POST, "rkey": k("here"), "value": post("x")},
            "already exists",
        ),
    ]
    for write, message in cases:
        ok = {"$type": f"{AW}#create", "collection": POST, "value": post("fine")}
        with pytest.raises(InvalidRequest, match=message):
            writer.apply_writes(store, alice.did, alice.key, [ok, write])
    assert state(store, alice.did) == before


def test_apply_writes_update_of_the_same_record_still_commits(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    cid = writer.put_record(store, alice.did, alice.key, POST, k("a"), post("x")).results[0].cid
    body = [{"$type": f"{AW}#update", "collection": POST, "rkey": k("a"), "value": post("x")}]
    out = writer.apply_writes(store, alice.did, alice.key, body)
    assert out.commit is not None and out.result is not None
    op = out.result.ops[0]
    assert (op.action, op.cid, op.prev) == ("update", cid, cid)
    check_all(alice)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ({"$type": f"{AW}#move", "collection": POST, "rkey": k("a")}, "Action not supported"),
        ({"collection": POST, "rkey": k("a")}, "Action not supported"),
        ({"$type": f"{AW}#update", "collection": POST, "value": {}}, "rkey"),
        ({"$type": f"{AW}#create", "collection": POST}, "value"),
        ({"$type": f"{AW}#create", "collection": 5, "value": {}}, "collection"),
        ({"$type": f"{AW}#create", "collection": POST, "rkey": 7, "value": {}}, "rkey"),
        ("not an object", "object"),
    ],
)
def test_apply_writes_shapes(write: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ops_from_apply_writes([write])


def test_two_hundred_writes_make_one_commit_and_more_are_refused(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    ops = [CreateOp(POST, k(f"k{i:03}"), post(str(i))) for i in range(200)]
    out = writer.apply(store, alice.did, alice.key, ops)
    assert out.result is not None and len(out.result.ops) == 200
    assert len(records(store, alice.did)) == 200
    before = state(store, alice.did)
    more = [CreateOp(POST, k(f"m{i:03}"), post(str(i))) for i in range(201)]
    with pytest.raises(InvalidRequest, match=r"Too many writes\. Max: 200") as info:
        writer.apply(store, alice.did, alice.key, more)
    assert info.value.rule == "MAX_COMMIT_OPS"
    body = [{"$type": f"{AW}#delete", "collection": POST, "rkey": k(f"k{i:03}")} for i in range(201)]
    with pytest.raises(InvalidRequest, match="Too many writes"):
        writer.apply_writes(store, alice.did, alice.key, body)
    assert state(store, alice.did) == before
    # 200 deletes: the collection goes in one commit
    writer.apply(
        store, alice.did, alice.key, [DeleteOp(POST, k(f"k{i:03}"), must_exist=True) for i in range(200)]
    )
    assert records(store, alice.did) == {}
    check_all(alice)


def test_the_event_size_limit(store: Store, writer: RepoWriter, alice: Account) -> None:
    before = state(store, alice.did)
    big = [CreateOp(UNKNOWN, f"k{i}", {"blob": str(i) * 700_000}) for i in range(3)]  # distinct blocks
    with pytest.raises(InvalidRequest, match="Max event size") as info:
        writer.apply(store, alice.did, alice.key, big)
    assert info.value.rule == "MAX_COMMIT_BLOCKS_BYTES"
    with pytest.raises(LimitExceeded, match="MAX_RECORD_BYTES"):
        writer.apply(store, alice.did, alice.key, [CreateOp(UNKNOWN, "huge", {"blob": "x" * 1_000_001})])
    assert state(store, alice.did) == before
    writer.apply(store, alice.did, alice.key, big[:2])  # 1.4 MB fits
    check_all(alice)


def test_a_path_twice_in_one_batch_is_refused(store: Store, writer: RepoWriter, alice: Account) -> None:
    ops: list[WriteOp] = [CreateOp(POST, k("a"), post("1")), DeleteOp(POST, k("a"))]
    with pytest.raises(InvalidRequest, match="written twice") as info:
        writer.apply(store, alice.did, alice.key, ops)
    assert info.value.rule == "duplicate-path"


# --- validation -----------------------------------------------------------------------------------


def test_validate_switch(store: Store, writer: RepoWriter, alice: Account) -> None:
    did, key = alice.did, alice.key
    before = state(store, did)
    with pytest.raises(InvalidRequest, match=f"Unknown lexicon type: {UNKNOWN}"):
        writer.create_record(store, did, key, UNKNOWN, {"a": 1}, validate=True)
    bad_post = {"text": "x" * 3001, "createdAt": NOW}
    with pytest.raises(InvalidLexiconData) as info:
        writer.create_record(store, did, key, POST, bad_post)
    assert info.value.xrpc_error == "InvalidRequest" and info.value.path == "text"
    with pytest.raises(InvalidLexiconData):
        writer.create_record(store, did, key, POST, bad_post, validate=True)
    assert state(store, did) == before
    unset = writer.create_record(store, did, key, UNKNOWN, {"a": 1})
    assert unset.results[0].validation_status == "unknown"
    skipped = writer.create_record(store, did, key, POST, bad_post, validate=False)
    assert (
        skipped.results[0].validation_status is None
        and "validationStatus" not in skipped.results[0].to_json()
    )
    valid = writer.create_record(store, did, key, POST, post("ok"), validate=True)
    assert valid.results[0].validation_status == "valid"
    check_all(alice)


def test_type_must_match_the_collection(store: Store, writer: RepoWriter, alice: Account) -> None:
    with pytest.raises(InvalidRequest, match="Invalid \\$type") as info:
        writer.create_record(store, alice.did, alice.key, POST, {"$type": LIKE, "text": "x"}, validate=False)
    assert info.value.rule == "$type"
    with pytest.raises(InvalidRequest, match="record must be an object"):
        writer.put_record(store, alice.did, alice.key, POST, k("a"), ["not", "a", "record"])


def test_record_keys_follow_the_lexicon_key_type(store: Store, writer: RepoWriter, alice: Account) -> None:
    did, key = alice.did, alice.key
    with pytest.raises(InvalidLexiconData, match="literal:self") as info:
        writer.put_record(store, did, key, PROFILE, "other", {"displayName": "A"})
    assert info.value.rule == "key"
    with pytest.raises(InvalidLexiconData):  # a generated TID is no "self" either
        writer.create_record(store, did, key, PROFILE, {"displayName": "A"})
    with pytest.raises(InvalidLexiconData, match="tid"):
        writer.put_record(store, did, key, POST, "not-a-tid", post("x"), validate=True)
    with pytest.raises(InvalidRequest, match="invalid record key"):
        writer.put_record(store, did, key, POST, "no/slash", post("x"))
    with pytest.raises(InvalidRequest, match="invalid record key"):
        writer.create_record(store, did, key, POST, post("x"), rkey="")
    with pytest.raises(InvalidRequest, match="not an NSID"):
        writer.create_record(store, did, key, "not an nsid", {"a": 1})
    with pytest.raises(InvalidRequest, match="invalid record key"):
        writer.delete_record(store, did, key, POST, "..")
    with pytest.raises(InvalidRequest, match="not an NSID"):
        writer.delete_record(store, did, key, "nope", "a")
    # validate: false skips the key type, not the key syntax
    out = writer.put_record(store, did, key, PROFILE, "other", {"displayName": "A"}, validate=False)
    assert out.commit is not None
    # unset validate and an unknown type: only syntax
    writer.put_record(store, did, key, UNKNOWN, "any-key:here", {"a": 1})
    writer.put_record(store, did, key, PROFILE, "self", {"displayName": "A"})
    check_all(alice)


def test_data_model_violations_are_refused_even_unvalidated(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    with pytest.raises(InvalidRequest, match="Legacy blobs"):
        writer.create_record(
            store,
            alice.did,
            alice.key,
            UNKNOWN,
            {"b": {"cid": str(CID.for_raw(b"x")), "mimeType": "a/b"}},
            validate=False,
        )
    with pytest.raises(InvalidRequest, match=r"Invalid record at writes/0") as info:
        writer.create_record(store, alice.did, alice.key, UNKNOWN, {"n": 1.5}, validate=False)
    assert info.value.rule == "data-model"


# --- accounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [("deactivated", RepoDeactivated), ("takendown", AccountTakedown), ("suspended", AccountTakedown)],
)
def test_only_active_accounts_write(
    store: Store, writer: RepoWriter, status: AccountStatus, error: type[AtrepoError]
) -> None:
    account = new_account(store, status)
    before = state(store, account.did)
    with pytest.raises(error):
        writer.create_record(store, account.did, account.key, POST, post("x"))
    with pytest.raises(error):  # even a no-op is refused: the account is checked first
        writer.delete_record(store, account.did, account.key, POST, k("nothing"))
    assert state(store, account.did) == before


def test_an_unknown_repo(store: Store, writer: RepoWriter) -> None:
    key = PrivateKey.generate("k256")
    with pytest.raises(RepoNotFound, match="Could not find repo") as info:
        writer.create_record(store, new_did(), key, POST, post("x"))
    assert info.value.xrpc_error == "RepoNotFound"


# --- blobs ----------------------------------------------------------------------------------------


def test_an_uploaded_blob_is_accepted_and_becomes_referenced(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    data = b"\x89PNG picture"
    cid = upload(store, alice.did, data)
    row = store.get_blob(alice.did, cid)
    assert row is not None and row.temporary
    out = writer.put_record(store, alice.did, alice.key, POST, k("a"), with_image("look", cid, len(data)))
    assert out.commit is not None
    row = store.get_blob(alice.did, cid)
    assert row is not None and not row.temporary
    assert store.blob_records(alice.did, cid) == [path("a")]
    assert store.list_blobs(alice.did) == [cid]
    # a second record may reuse it; replacing the first drops only its reference
    writer.put_record(store, alice.did, alice.key, UNKNOWN, "b", {"deep": [{"x": blob(cid, len(data))}]})
    writer.put_record(store, alice.did, alice.key, POST, k("a"), post("no picture"))
    assert store.blob_records(alice.did, cid) == [f"{UNKNOWN}/b"]
    # the last reference goes: the blob goes (repo-api.md §9)
    writer.delete_record(store, alice.did, alice.key, UNKNOWN, "b")
    assert store.get_blob(alice.did, cid) is None and store.list_blobs(alice.did) == []
    check_all(alice)


def test_blobs_must_be_uploads_of_this_account(store: Store, writer: RepoWriter, alice: Account) -> None:
    bob = new_account(store)
    data = b"bob's picture"
    theirs = upload(store, bob.did, data)
    never = CID.for_raw(b"never uploaded")
    before = state(store, alice.did)
    for cid in (theirs, never):
        with pytest.raises(BlobNotFound, match=f"Could not find blob: {cid}") as info:
            writer.create_record(store, alice.did, alice.key, POST, with_image("x", cid, len(data)))
        assert info.value.xrpc_error == "BlobNotFound"
        with pytest.raises(BlobNotFound):  # in unknown data, unvalidated, too
            writer.create_record(store, alice.did, alice.key, UNKNOWN, {"z": [blob(cid, 1)]}, validate=False)
    assert state(store, alice.did) == before
    bob_row = store.get_blob(bob.did, theirs)
    assert bob_row is not None and bob_row.temporary  # nothing of Bob's changed either


def test_a_temporary_blob_must_match_the_reference(store: Store, writer: RepoWriter, alice: Account) -> None:
    data = b"picture bytes"
    cid = upload(store, alice.did, data)
    before = state(store, alice.did)
    with pytest.raises(InvalidRequest, match="Mimetype does not match") as info:
        writer.create_record(store, alice.did, alice.key, POST, with_image("x", cid, len(data), "image/jpeg"))
    assert info.value.rule == "mimeType"
    with pytest.raises(InvalidRequest, match="Size does not match") as info:
        writer.create_record(store, alice.did, alice.key, POST, with_image("x", cid, len(data) + 1))
    assert info.value.rule == "size"
    assert state(store, alice.did) == before
    row = store.get_blob(alice.did, cid)
    assert row is not None and row.temporary


def test_a_batch_failing_on_one_blob_references_none(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    data = b"good picture"
    good = upload(store, alice.did, data)
    ops = [
        CreateOp(POST, k("a"), with_image("ok", good, len(data))),
        CreateOp(POST, k("b"), with_image("bad", CID.for_raw(b"missing"), 3)),
    ]
    with pytest.raises(BlobNotFound):
        writer.apply(store, alice.did, alice.key, ops)
    row = store.get_blob(alice.did, good)
    assert row is not None and row.temporary and store.blob_records(alice.did, good) == []


# --- createRecord's duplicate follows, blocks, likes and reposts ----------------------------------


def test_create_record_replaces_an_older_follow_of_the_same_subject(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    did, key = alice.did, alice.key
    bob, carol = new_did(), new_did()
    first = writer.create_record(store, did, key, FOLLOW, follow(bob))
    writer.create_record(store, did, key, FOLLOW, follow(carol))
    writer.create_record(store, did, key, POST, post(bob))  # another collection is never touched
    second = writer.create_record(store, did, key, FOLLOW, follow(bob))
    assert second.replaced == (first.results[0].uri,)
    assert second.result is not None
    assert [(op.action, op.path) for op in second.result.ops] == [
        ("delete", first.results[0].uri.split("/", 3)[3]),
        ("create", second.results[0].uri.split("/", 3)[3]),
    ]
    follows = {path for path in records(store, did) if path.startswith(FOLLOW)}
    assert len(follows) == 2 and first.results[0].uri.split("/", 3)[3] not in follows
    # validate: false keeps duplicates, and so does applyWrites
    third = writer.create_record(store, did, key, FOLLOW, follow(bob), validate=False)
    assert third.replaced == ()
    body = [{"$type": f"{AW}#create", "collection": FOLLOW, "value": follow(bob)}]
    assert writer.apply_writes(store, did, key, body).replaced == ()
    assert sum(1 for p in records(store, did) if p.startswith(FOLLOW)) == 4
    # a new follow of bob replaces all three at once
    fourth = writer.create_record(store, did, key, FOLLOW, follow(bob))
    assert len(fourth.replaced) == 3
    assert sum(1 for p in records(store, did) if p.startswith(FOLLOW)) == 2
    check_all(alice)


def test_create_record_replaces_an_older_like_of_the_same_subject(
    store: Store, writer: RepoWriter, alice: Account
) -> None:
    did, key = alice.did, alice.key
    target = writer.put_record(store, did, key, POST, k("p"), post("likeable")).results[0]
    assert target.cid is not None
    like = {"$type": LIKE, "subject": {"uri": target.uri, "cid": str(target.cid)}, "createdAt": NOW}
    first = writer.create_record(store, did, key, LIKE, like)
    second = writer.create_record(store, did, key, LIKE, like)  # the same record: the same block
    assert second.replaced == (first.results[0].uri,)
    assert [p for p in records(store, did) if p.startswith(LIKE)] == [second.results[0].uri.split("/", 3)[3]]
    check_all(alice)


# --- the whole store ------------------------------------------------------------------------------


def test_prepare_then_commit(store: Store, writer: RepoWriter, alice: Account) -> None:
    batch = writer.prepare(alice.did, [CreateOp(POST, None, post("a")), UpdateOp(POST, k("b"), post("b"))])
    out = writer.commit(store, alice.key, batch)
    assert [r.action for r in out.results] == ["create", "create"]
    check_all(alice)


def test_ops_are_checked_by_type() -> None:
    with pytest.raises(TypeError):
        RepoWriter(REGISTRY).prepare("did:plc:x", ["create"])  # type: ignore[list-item]
    assert repr(UNCHECKED) == "UNCHECKED"


def test_errors_change_nothing_anywhere(store: Store, writer: RepoWriter, alice: Account) -> None:
    """A failure after the commit is built (here: the event append) rolls the whole write back."""
    bob = new_account(store)
    writer.put_record(store, alice.did, alice.key, POST, k("a"), post("a"))
    data = b"picture"
    cid = upload(store, alice.did, data)
    before = (state(store, alice.did), state(store, bob.did), store.get_blob(alice.did, cid))

    class Boom(Exception):
        pass

    engine = type(store)  # the store's own class: a patch there leaves SQLiteStore's alone on PostgreSQL
    real = engine.transaction

    def failing(self: SQLiteStore, did: str) -> Any:
        manager = real(self, did)

        class Wrapped:
            def __enter__(self) -> Any:
                tx = manager.__enter__()
                original = tx.append_event

                def append(make: Any) -> Any:
                    original(make)
                    raise Boom

                tx.append_event = append  # type: ignore[method-assign]
                return tx

            def __exit__(self, *exc: Any) -> Any:
                return manager.__exit__(*exc)

        return Wrapped()

    ops: list[WriteOp] = [
        UpdateOp(POST, k("a"), with_image("b", cid, len(data))),
        CreateOp(POST, k("c"), post("c")),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "transaction", failing)
        with pytest.raises(Boom):
            writer.apply(store, alice.did, alice.key, ops)
    assert (state(store, alice.did), state(store, bob.did), store.get_blob(alice.did, cid)) == before
    writer.apply(store, alice.did, alice.key, ops)  # and the same write then goes through
    check_all(alice)
    check_all(bob)


def test_a_sequence_of_writes_verifies_and_chains(store: Store, writer: RepoWriter, alice: Account) -> None:
    bob = new_account(store)
    did, key = alice.did, alice.key
    for i in range(30):
        writer.put_record(store, did, key, POST, k(f"p{i % 7}"), post(f"v{i}"))
        if i % 3 == 0:
            writer.delete_record(store, did, key, POST, k(f"p{(i + 2) % 7}"))
        if i % 5 == 0:
            writer.create_record(store, bob.did, bob.key, POST, post(str(i)))
            writer.apply(store, did, key, [DeleteOp(POST, k(f"p{j}")) for j in range(7)])
    commits = check_events(store, did, key)
    assert len(commits) > 30
    check_repo(store, did, key)
    check_all(bob)


# --- the kept tree: reused only while the stored head is the commit it belongs to ---------------


def test_the_kept_tree_is_reused_and_never_outlives_its_head(store: Store, alice: Account) -> None:
    writer = RepoWriter(REGISTRY)
    for i in range(TREE_REUSES + 3):  # past the reuse bound: reopened from the store once
        writer.create_record(store, alice.did, alice.key, POST, post(f"kept {i}"), rkey=k(f"kept{i}"))
    other = RepoWriter(REGISTRY)  # another writer moves the head: the first one's kept tree is stale
    other.create_record(store, alice.did, alice.key, POST, post("elsewhere"), rkey=k("elsewhere"))
    with store.transaction(alice.did) as tx:  # and a commit straight through the store
        result = tx.open_repo().apply_writes([Write("create", POST, k("direct"), post("direct"))], alice.key)
        tx.apply_commit(result)
        tx.append_event(result.to_event)
    out = writer.create_record(store, alice.did, alice.key, POST, post("after"), rkey=k("after"))
    assert out.commit is not None
    index = records(store, alice.did)
    assert {path(f"kept{i}") for i in range(TREE_REUSES + 3)} | {
        path("elsewhere"),
        path("direct"),
        path("after"),
    } == set(index)
    check_all(alice)


def test_a_lost_transaction_leaves_no_kept_tree_behind(store: SQLiteStore, alice: Account) -> None:
    writer = RepoWriter(REGISTRY)
    writer.create_record(store, alice.did, alice.key, POST, post("one"), rkey=k("one"))
    with pytest.raises(WriteAborted), store.group_commit():
        writer.create_record(store, alice.did, alice.key, POST, post("lost"), rkey=k("lost"))  # tree kept
        store._writer.execute("ROLLBACK")  # then the transaction is lost (as an I/O error would)
    writer.create_record(store, alice.did, alice.key, POST, post("two"), rkey=k("two"))
    assert set(records(store, alice.did)) == {path("one"), path("two")}
    check_all(alice)
