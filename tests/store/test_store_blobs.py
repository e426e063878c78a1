"""Blob files (content-addressed, written whole or not at all) and blob metadata with its references."""

from __future__ import annotations

from typing import Any

import pytest
from store_support import POST, FakeClock, check_repo, commit, create, delete, new_account, post, update

from atrepo.core.cid import CID
from atrepo.core.errors import MissingBlock
from atrepo.core.events import AccountEvent
from atrepo.store.base import Store


def blob_ref(cid: CID, size: int) -> dict[str, Any]:
    return {"$type": "blob", "ref": cid, "mimeType": "image/png", "size": size}


def with_image(text: str, cid: CID, size: int) -> dict[str, Any]:
    return post(text, embed=blob_ref(cid, size))


def upload(store: Store, did: str, data: bytes) -> CID:
    cid, size = store.blob_files.write([data[:3], data[3:]])
    with store.transaction(did) as tx:
        tx.add_blob(cid, "image/png", size)
    return cid


def test_blob_files_are_content_addressed(store: Store) -> None:
    files = store.blob_files
    data = b"\x89PNG" + bytes(range(256)) * 10
    cid, size = files.write(iter([data[:100], data[100:]]))
    assert cid == CID.for_raw(data) and size == len(data)
    assert files.read(cid) == data and files.exists(cid)
    assert files.path(cid).name == str(cid)
    assert files.write([data]) == (cid, size)  # again: nothing changes
    with pytest.raises(ValueError):
        files.write([b"x" * 10, b"y" * 10], max_bytes=15)
    assert list((files.root / "tmp").iterdir()) == []
    missing = CID.for_raw(b"never written")
    assert files.read(missing) is None and not files.exists(missing)


def test_uploads_stay_temporary_until_a_record_references_them(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store)
    data = b"picture bytes"
    cid = upload(store, did, data)
    row = store.get_blob(did, cid)
    assert (
        row is not None
        and row.temporary
        and (row.mime, row.size, row.created_ms) == ("image/png", 13, clock.ms)
    )
    assert store.list_blobs(did) == []
    upload(store, did, data)  # a second upload changes nothing
    path = f"{POST}/a"
    commit(store, did, key, [create("a", with_image("hi", cid, len(data)))], blob_refs={path: [cid]})
    row = store.get_blob(did, cid)
    assert row is not None and not row.temporary
    assert store.list_blobs(did) == [cid] and store.blob_records(did, cid) == [path]
    commit(
        store, did, key, [create("b", with_image("again", cid, len(data)))], blob_refs={f"{POST}/b": [cid]}
    )
    assert store.blob_records(did, cid) == [path, f"{POST}/b"]
    commit(store, did, key, [delete("a")])
    assert store.get_blob(did, cid) is not None and store.blob_files.exists(cid)
    # the last reference goes (an update that drops the image): the blob and its file go
    commit(store, did, key, [update("b", post("no image"))])
    assert store.get_blob(did, cid) is None and store.list_blobs(did) == []
    assert not store.blob_files.exists(cid)
    check_repo(store, did, key)


def test_a_file_shared_by_two_accounts_stays_while_one_holds_it(store: Store) -> None:
    a, key_a = new_account(store)
    b, _ = new_account(store)
    data = b"shared image"
    cid = upload(store, a, data)
    upload(store, b, data)
    commit(store, a, key_a, [create("x", with_image("x", cid, len(data)))], blob_refs={f"{POST}/x": [cid]})
    commit(store, a, key_a, [delete("x")])
    assert store.get_blob(a, cid) is None and store.get_blob(b, cid) is not None
    assert store.blob_files.read(cid) == data


def test_temporary_uploads_are_pruned(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store)
    old = upload(store, did, b"old upload")
    kept = upload(store, did, b"kept upload")
    commit(store, did, key, [create("k", with_image("k", kept, 11))], blob_refs={f"{POST}/k": [kept]})
    clock.advance(3_600_000)
    fresh = upload(store, did, b"fresh upload")
    assert store.prune_temporary_blobs(clock.ms - 60_000) == 1
    assert store.get_blob(did, old) is None and not store.blob_files.exists(old)
    assert store.get_blob(did, kept) is not None and store.get_blob(did, fresh) is not None


def test_references_to_blobs_never_uploaded_are_listed(store: Store) -> None:
    did, key = new_account(store)
    ghost = CID.for_raw(b"uploaded elsewhere")
    commit(store, did, key, [create("m", with_image("m", ghost, 18))], blob_refs={f"{POST}/m": [ghost]})
    assert store.list_missing_blobs(did) == [(ghost, f"{POST}/m")]
    assert store.list_blobs(did) == [ghost]
    store.blob_files.write([b"uploaded elsewhere"])
    with store.transaction(did) as tx:
        row = tx.add_blob(ghost, "image/png", 18)
    assert not row.temporary  # already referenced: an import's blob arriving late
    assert store.list_missing_blobs(did) == []


def test_metadata_without_bytes_is_refused(store: Store) -> None:
    did, _ = new_account(store)
    with pytest.raises(MissingBlock), store.transaction(did) as tx:
        tx.add_blob(CID.for_raw(b"not on disk"), "text/plain", 11)


def test_list_blobs_pages_by_cid_string(store: Store) -> None:
    did, key = new_account(store)
    cids = [upload(store, did, f"blob {i}".encode()) for i in range(7)]
    writes = [create(f"r{i}", with_image(str(i), cid, 6)) for i, cid in enumerate(cids)]
    commit(store, did, key, writes, blob_refs={w.path: [cids[i]] for i, w in enumerate(writes)})
    seen: list[CID] = []
    cursor = None
    while page := store.list_blobs(did, cursor=cursor, limit=3):
        seen += page
        cursor = str(page[-1])
    assert [str(c) for c in seen] == sorted(str(c) for c in cids)


def test_list_blobs_since_a_rev_lists_only_blobs_of_records_written_after_it(store: Store) -> None:
    did, key = new_account(store)
    old, new = upload(store, did, b"old blob"), upload(store, did, b"new blob")
    first = create("a", with_image("a", old, 8))
    before, _ = commit(store, did, key, [first], blob_refs={first.path: [old]})
    second = create("b", with_image("b", new, 8))
    commit(store, did, key, [second], blob_refs={second.path: [new]})
    assert store.list_blobs(did, since=before.rev) == [new]
    assert sorted(map(str, store.list_blobs(did))) == sorted([str(old), str(new)])
    assert store.list_blobs(did, since="7777777777777") == []


def test_deleting_an_account_deletes_its_blob_files(store: Store) -> None:
    did, _ = new_account(store)
    other, _ = new_account(store)
    mine = upload(store, did, b"only mine")
    shared = upload(store, did, b"shared one")
    upload(store, other, b"shared one")
    with store.transaction(did) as tx:
        tx.delete_account()
        tx.append_event(lambda seq, time: AccountEvent(seq, did, time, False, "deleted"))
    assert not store.blob_files.exists(mine) and store.blob_files.exists(shared)
