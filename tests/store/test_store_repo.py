"""Repository blocks, heads and the record index, through real commits built by the core."""

from __future__ import annotations

import pytest
from store_support import (
    LIKE,
    POST,
    all_records,
    check_repo,
    commit,
    create,
    delete,
    new_account,
    open_repo,
    post,
    stored_blocks,
    update,
)

from atrepo.core.errors import OutOfSync
from atrepo.core.events import IdentityEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo
from atrepo.store.base import RepoHead, Store


def test_commits_read_back_and_verify(store: Store) -> None:
    did, key = new_account(store, writes=[create("a"), create("b"), create("x", collection=LIKE)])
    expected = {f"{POST}/a", f"{POST}/b", f"{LIKE}/x"}
    assert set(check_repo(store, did, key)) == expected
    steps = [
        [create("c"), update("a", post("a, edited"))],
        [delete("b")],
        [create(f"k{i:03d}") for i in range(120)],
        [delete(f"k{i:03d}") for i in range(0, 120, 3)],
        [update("c", post("c, edited")), create("y", collection=LIKE)],
        [],  # an empty commit: new rev, same data
    ]
    for writes in steps:
        result, _ = commit(store, did, key, writes)
        for write in writes:
            expected.discard(write.path) if write.action == "delete" else expected.add(write.path)
        records = check_repo(store, did, key)
        assert set(records) == expected
        assert records == dict(result.repo.walk())
        head = store.repo_head(did)
        assert head is not None and head.cid == result.commit.cid and head.rev == result.rev
    repo = open_repo(store, did)
    got = repo.get_record(POST, "a")
    assert got is not None and got[1]["text"] == "a, edited"
    assert repo.get_record(POST, "b") is None


def test_blocks_carry_the_rev_that_wrote_them(store: Store) -> None:
    did, key = new_account(store, writes=[create("a")])
    first, _ = commit(store, did, key, [create("b")])
    second, _ = commit(store, did, key, [create("c")])
    newer = dict(store.blocks_since(did, first.rev))
    assert second.commit.cid in newer and first.commit.cid not in newer
    assert set(newer) <= set(second.blocks.cids())
    assert set(newer) == set(second.blocks.cids()) & set(stored_blocks(store, did))
    assert dict(store.blocks_since(did, second.rev)) == {}
    assert set(dict(store.blocks_since(did, None))) == set(stored_blocks(store, did))
    assert list(store.blocks_since("did:plc:unknownunknownunknownab", None)) == []


def test_get_blocks_answers_only_what_the_repo_holds(store: Store) -> None:
    did, _ = new_account(store, writes=[create("a")])
    other, _ = new_account(store, writes=[create("z")])
    head = store.repo_head(did)
    other_head = store.repo_head(other)
    assert head is not None and other_head is not None
    got = store.get_blocks(did, [head.cid, other_head.cid])
    assert set(got) == {head.cid}
    assert store.repo_blocks(did).get(other_head.cid) is None
    assert store.repo_blocks("did:plc:unknownunknownunknownab").get(head.cid) is None


def test_identical_records_share_a_block_until_the_last_path_goes(store: Store) -> None:
    same = post("same text")
    did, key = new_account(store, writes=[create("one", same), create("two", same), create("three")])
    record_cid = open_repo(store, did).get_record_cid(POST, "one")
    assert record_cid is not None and record_cid == open_repo(store, did).get_record_cid(POST, "two")
    commit(store, did, key, [delete("one")])
    assert store.repo_blocks(did).get(record_cid) is not None
    assert set(check_repo(store, did, key)) == {f"{POST}/two", f"{POST}/three"}
    # replacing the last holder's value removes the block
    commit(store, did, key, [update("two", post("other text"))])
    assert store.repo_blocks(did).get(record_cid) is None
    check_repo(store, did, key)
    # a block that comes back is stored again
    commit(store, did, key, [create("four", same)])
    assert store.repo_blocks(did).get(record_cid) is not None
    commit(store, did, key, [create("five", same), delete("four")])
    assert store.repo_blocks(did).get(record_cid) is not None
    assert set(check_repo(store, did, key)) == {f"{POST}/two", f"{POST}/three", f"{POST}/five"}


def test_identical_records_across_repos_are_independent(store: Store) -> None:
    same = post("shared")
    a, key_a = new_account(store, writes=[create("r", same)])
    b, key_b = new_account(store, writes=[create("r", same)])
    commit(store, a, key_a, [delete("r")])
    assert set(check_repo(store, b, key_b)) == {f"{POST}/r"}
    assert check_repo(store, a, key_a) == {}


def test_record_index_pages_like_list_records(store: Store) -> None:
    rkeys = [f"3k{i:04d}" for i in range(25)]
    did, _ = new_account(store, writes=[create(r) for r in rkeys] + [create("l1", collection=LIKE)])
    other, _ = new_account(store, writes=[create("3k9999")])
    repo = open_repo(store, did)
    newest_first = [row.rkey for row in store.list_records(did, POST, limit=100)]
    assert newest_first == sorted(rkeys, reverse=True)
    assert [row.rkey for row in store.list_records(did, POST, limit=100, reverse=True)] == sorted(rkeys)
    for reverse in (False, True):
        seen: list[str] = []
        cursor = None
        while page := store.list_records(did, POST, cursor=cursor, limit=4, reverse=reverse):
            assert len(page) <= 4
            seen += [row.rkey for row in page]
            cursor = page[-1].rkey
        assert seen == sorted(rkeys, reverse=not reverse)
    # the index agrees with the tree (whose ``reverse`` runs the other way)
    tree_desc = repo.list_records(POST, limit=100, reverse=True)
    assert [(row.rkey, row.cid) for row in store.list_records(did, POST, limit=100)] == tree_desc
    page = store.list_records(did, POST, cursor="3k0010", limit=3)
    assert [row.rkey for row in page] == ["3k0009", "3k0008", "3k0007"]
    assert store.list_records(did, POST, limit=0) == []
    assert store.list_collections(did) == [LIKE, POST]
    row = store.get_record(did, POST, "3k0003")
    assert row is not None and row.cid == repo.get_record_cid(POST, "3k0003")
    assert row.uri == f"at://{did}/{POST}/3k0003" and row.rev == repo.rev
    assert store.get_record(did, POST, "3k9999") is None
    assert store.get_record(other, POST, "3k9999") is not None
    assert len(all_records(store, did)) == 26


def test_record_index_follows_updates_and_deletes(store: Store) -> None:
    did, key = new_account(store, writes=[create("a"), create("b")])
    result, _ = commit(store, did, key, [update("a", post("new")), delete("b")])
    row = store.get_record(did, POST, "a")
    assert row is not None and row.rev == result.rev and row.cid == result.repo.get_record_cid(POST, "a")
    assert store.get_record(did, POST, "b") is None
    commit(store, did, key, [delete("a")])
    assert store.list_collections(did) == []


def test_a_stale_commit_is_refused(store: Store) -> None:
    did, key = new_account(store, writes=[create("a")])
    stale = open_repo(store, did).apply_writes([create("b")], key)
    commit(store, did, key, [create("c")])
    before = (store.repo_head(did), stored_blocks(store, did), store.head_seq())
    with pytest.raises(OutOfSync), store.transaction(did) as tx:
        tx.apply_commit(stale)
    assert (store.repo_head(did), stored_blocks(store, did), store.head_seq()) == before
    with pytest.raises(OutOfSync), store.transaction(did) as tx:
        tx.apply_commit(Repo.create(did, key))  # a first commit for a repository that has one


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    did, key = new_account(store, writes=[create("a"), create("b")])
    before = (
        store.repo_head(did),
        stored_blocks(store, did),
        all_records(store, did),
        store.head_seq(),
        store.read_events(0, 100),
    )
    with pytest.raises(ZeroDivisionError), store.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create("c"), delete("a"), update("b", post("x"))], key)
        tx.apply_commit(result)
        tx.append_event(result.to_event)
        tx.set_handle("renamed.test")
        tx.set_status("deactivated")
        assert tx.head() == RepoHead(result.commit.cid, result.rev)
        assert len(tx.events) == 1
        1 / 0  # noqa: B018
    after = (
        store.repo_head(did),
        stored_blocks(store, did),
        all_records(store, did),
        store.head_seq(),
        store.read_events(0, 100),
    )
    assert after == before
    account = store.get_account(did)
    assert account is not None and account.status == "active" and account.handle != "renamed.test"
    check_repo(store, did, key)
    # the seq the failed transaction took is handed out again: no gap
    _, event = commit(store, did, key, [create("c")])
    assert event.seq == before[3] + 1


def test_a_failed_account_creation_leaves_nothing(store: Store) -> None:
    seq = store.head_seq()
    with pytest.raises(ZeroDivisionError), store.transaction("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa") as tx:
        tx.create_account(handle="ghost.test", signing_key=b"k")
        result = Repo.create(tx.did, PrivateKey.generate("k256"))
        tx.apply_commit(result)
        tx.append_event(lambda s, t: IdentityEvent(s, tx.did, t, "ghost.test"))
        1 / 0  # noqa: B018
    assert store.get_account("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa") is None
    assert store.get_account_by_handle("ghost.test") is None
    assert store.head_seq() == seq and store.read_events(seq, 10) == []


def test_a_transaction_is_dead_after_its_block(store: Store) -> None:
    did, key = new_account(store, writes=[create("a")])
    with store.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create("b")], key)
        tx.apply_commit(result)
    with pytest.raises(RuntimeError):
        tx.head()
    # a repository built inside the transaction still reads, from the committed blocks
    assert result.repo.get_record(POST, "b") is not None
    with pytest.raises(RuntimeError, match="already inside"), store.transaction(did), store.transaction(did):
        pass
    assert open_repo(store, did).get_record(POST, "b") is not None


def test_commits_need_an_account_and_the_right_did(store: Store) -> None:
    did, key = new_account(store)
    other, _ = new_account(store)
    with pytest.raises(RuntimeError), store.transaction("did:plc:nobodynobodynobodynobody") as tx:
        tx.apply_commit(Repo.create("did:plc:nobodynobodynobodynobody", key))
    with pytest.raises(RuntimeError), store.transaction(other) as tx:
        tx.apply_commit(open_repo(store, did).apply_writes([create("a")], key))
    with pytest.raises(RuntimeError), store.transaction(did) as tx:
        tx.append_event(lambda s, t: IdentityEvent(s, other, t))
    with pytest.raises(RuntimeError), store.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create("a")], key)
        tx.apply_commit(result, blob_refs={f"{POST}/zzz": []})
