"""``count_accounts``: the per-status tally status pages show, kept in step with every status change."""

from __future__ import annotations

from store_support import new_account

from atrepo.store.base import Store


def test_counts_follow_creations_status_changes_and_deletions(store: Store) -> None:
    assert store.count_accounts() == {}
    dids = [new_account(store, handle=f"user{i}.test")[0] for i in range(4)]
    assert store.count_accounts() == {"active": 4}
    with store.transaction(dids[0]) as tx:
        tx.set_status("deactivated")
    with store.transaction(dids[1]) as tx:
        tx.set_status("takendown")
    assert store.count_accounts() == {"active": 2, "deactivated": 1, "takendown": 1}
    with store.transaction(dids[1]) as tx:
        tx.delete_account()
    with store.transaction(dids[0]) as tx:
        tx.set_status("active")
    assert store.count_accounts() == {"active": 3}
    assert sum(store.count_accounts().values()) == len(store.list_accounts())
