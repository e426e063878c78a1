"""Accounts (unique handles and emails, statuses, paging) and refresh tokens (rotation, reuse, revocation)."""

from __future__ import annotations

import pytest
from store_support import FakeClock, check_repo, create, new_account, new_did

from atrepo.core.errors import InvalidRequest
from atrepo.store.base import RefreshToken, Store


def test_create_and_read_an_account(store: Store, clock: FakeClock) -> None:
    did, key = new_account(store, handle="Alice.Test", email="Alice@Example.com", writes=[create("a")])
    account = store.get_account(did)
    assert account is not None
    assert (account.did, account.handle, account.email, account.password_hash) == (
        did,
        "Alice.Test",
        "Alice@Example.com",
        "hash",
    )
    assert account.status == "active" and account.active
    assert account.signing_key == key.to_bytes()
    assert account.created_ms == clock.ms
    assert account.repo_head == store.repo_head(did)
    assert store.get_account_by_handle("alice.test") == account
    assert store.get_account_by_handle("ALICE.TEST") == account
    assert store.get_account_by_email("alice@example.COM") == account
    assert store.get_account(new_did()) is None
    assert store.get_account_by_handle("bob.test") is None


def test_handles_are_unique_whatever_their_case(store: Store) -> None:
    did, _ = new_account(store, handle="alice.test", email="a@example.com")
    other = new_did()
    with pytest.raises(InvalidRequest, match="handle"), store.transaction(other) as tx:
        tx.create_account(handle="ALICE.test", signing_key=b"k")
    with pytest.raises(InvalidRequest, match="email"), store.transaction(other) as tx:
        tx.create_account(handle="bob.test", signing_key=b"k", email="A@example.com")
    assert store.get_account(other) is None
    with pytest.raises(InvalidRequest), store.transaction(did) as tx:
        tx.create_account(handle="again.test", signing_key=b"k")  # the DID exists
    bob, _ = new_account(store, handle="bob.test")
    with pytest.raises(InvalidRequest, match="handle"), store.transaction(bob) as tx:
        tx.set_handle("Alice.Test")
    with pytest.raises(InvalidRequest, match="email"), store.transaction(bob) as tx:
        tx.set_email("a@EXAMPLE.com")
    with store.transaction(did) as tx:
        tx.set_handle("Alice.Test")  # its own handle in another case
        tx.set_email(None)
    with store.transaction(bob) as tx:
        tx.set_email("a@example.com")  # free again
    account = store.get_account(did)
    assert account is not None and account.handle == "Alice.Test" and account.email is None


def test_status_and_password(store: Store) -> None:
    did, _ = new_account(store)
    for status in ("takendown", "suspended", "deactivated", "deleted", "active"):
        with store.transaction(did) as tx:
            tx.set_status(status)  # type: ignore[arg-type]
        account = store.get_account(did)
        assert account is not None and account.status == status and account.active == (status == "active")
    with pytest.raises(ValueError), store.transaction(did) as tx:
        tx.set_status("throttled")  # type: ignore[arg-type]
    with store.transaction(did) as tx:
        tx.set_password_hash("scrypt$new")
    account = store.get_account(did)
    assert account is not None and account.password_hash == "scrypt$new"


def test_an_account_before_its_first_commit(store: Store) -> None:
    did = new_did()
    with store.transaction(did) as tx:
        account = tx.create_account(handle="fresh.test", signing_key=b"key", status="deactivated")
        assert tx.account() == account and tx.head() is None
        with pytest.raises(RuntimeError):
            tx.open_repo()
    assert store.get_account(did) == account and account.repo_head is None
    assert store.repo_head(did) is None


def test_list_accounts_by_creation_then_did(store: Store, clock: FakeClock) -> None:
    made = []
    for i in range(7):
        clock.advance(1 if i % 3 else 0)  # some accounts share a creation time
        did, _ = new_account(store)
        made.append((clock.ms, did))
    seen = []
    after = None
    while page := store.list_accounts(after=after, limit=3):
        seen += [(a.created_ms, a.did) for a in page]
        after = (page[-1].created_ms, page[-1].did)
    assert seen == sorted(made)


def test_refresh_token_rotation_and_reuse(store: Store) -> None:
    did, _ = new_account(store)
    now = 1_000_000
    day = 86_400_000
    store.create_refresh_token(RefreshToken("t1", did, now + 90 * day))
    assert store.get_refresh_token("t1") == RefreshToken("t1", did, now + 90 * day)

    first = store.rotate_refresh_token(
        "t1", "t2", now_ms=now, next_expires_ms=now + 90 * day, grace_ms=7200_000
    )
    assert first is not None and not first.reused
    assert first.successor == RefreshToken("t2", did, now + 90 * day)
    assert store.get_refresh_token("t1") == RefreshToken("t1", did, now + 7200_000, "t2")

    # a replay within the grace period: the same successor, nothing new
    again = store.rotate_refresh_token(
        "t1", "t2b", now_ms=now + 1000, next_expires_ms=now + day, grace_ms=7200_000
    )
    assert again is not None and again.reused and again.successor == first.successor
    assert store.get_refresh_token("t2b") is None
    # past the grace period the replay still shows as reuse; the host revokes the chain
    late = store.rotate_refresh_token(
        "t1", "t2c", now_ms=now + 7200_001, next_expires_ms=now + day, grace_ms=1
    )
    assert late is not None and late.reused and late.presented.expires_ms <= now + 7200_001

    third = store.rotate_refresh_token(
        "t2", "t3", now_ms=now + 5, next_expires_ms=now + day, grace_ms=7200_000
    )
    assert third is not None and not third.reused
    assert store.revoke_refresh_chain("t1") == 3
    for token_id in ("t1", "t2", "t3"):
        assert store.get_refresh_token(token_id) is None
    assert store.rotate_refresh_token("t2", "t4", now_ms=now, next_expires_ms=now + day, grace_ms=1) is None


def test_an_expired_token_does_not_rotate(store: Store) -> None:
    did, _ = new_account(store)
    store.create_refresh_token(RefreshToken("old", did, 500))
    rotation = store.rotate_refresh_token("old", "new", now_ms=500, next_expires_ms=10_000, grace_ms=100)
    assert rotation is not None and not rotation.reused and rotation.successor is None
    assert store.get_refresh_token("new") is None
    assert store.get_refresh_token("old") == RefreshToken("old", did, 500)


def test_revoking_and_pruning_tokens(store: Store) -> None:
    did, _ = new_account(store)
    other, _ = new_account(store)
    for i in range(3):
        store.create_refresh_token(RefreshToken(f"a{i}", did, 100 * (i + 1)))
    store.create_refresh_token(RefreshToken("b0", other, 10_000))
    assert store.prune_refresh_tokens(200) == 2
    assert store.get_refresh_token("a2") is not None
    assert store.delete_refresh_token("a2") and not store.delete_refresh_token("a2")
    store.create_refresh_token(RefreshToken("a3", did, 10_000))
    assert store.revoke_refresh_tokens(did) == 1
    assert store.get_refresh_token("b0") is not None
    with pytest.raises(RuntimeError):
        store.create_refresh_token(RefreshToken("x", new_did(), 10))  # no such account
    with pytest.raises(RuntimeError):
        store.create_refresh_token(RefreshToken("y", did, 10, next_id="z"))


def test_deleting_an_account_takes_everything_it_owns(store: Store) -> None:
    did, _ = new_account(store, handle="gone.test", writes=[create("a")])
    keep, keep_key = new_account(store, writes=[create("a")])
    store.create_refresh_token(RefreshToken("t", did, 10**15))
    with store.transaction(did) as tx:
        tx.delete_account()
        assert tx.account() is None
    assert store.get_account(did) is None and store.repo_head(did) is None
    assert list(store.blocks_since(did, None)) == []
    assert store.list_collections(did) == [] and store.get_refresh_token("t") is None
    assert store.get_account_by_handle("gone.test") is None
    new_account(store, handle="gone.test")  # the handle is free again
    assert store.get_account(keep) is not None
    check_repo(store, keep, keep_key)
