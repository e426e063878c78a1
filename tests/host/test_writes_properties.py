"""Random batches through the write path always leave a store whose index is its tree, and that verifies.

Each example drives one new account of a store (a fresh SQLite file; on
PostgreSQL the test's database, shared by the examples) through batches of
creates, puts, strict updates, deletes (of present and missing records) and
whole-collection wipes, re-creating deleted keys and repeating values (so that
paths share record blocks), against a plain dict as the model. After every
batch the record index equals the model and the tree; at the end the export
verifies and every event chains under Sync 1.1 validation.
"""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_writes import REGISTRY, check_all, k, new_account, post, records

from atrepo.core.cid import CID
from atrepo.core.repo import Repo
from atrepo.host.writes import CreateOp, DeleteOp, RepoWriter, UpdateOp, WriteOp
from atrepo.store.postgres import open_host_store

POST = "app.bsky.feed.post"
NOTE = "com.example.note"  # unknown to the registry: any record key, status "unknown"
COLLECTIONS = (POST, NOTE)
KINDS = ("create", "create-tid", "put", "update", "delete", "wipe")

#: (kind, collection index, key index, value index)
_op = st.tuples(st.sampled_from(KINDS), st.integers(0, 1), st.integers(0, 5), st.integers(0, 3))
_batches = st.lists(st.lists(_op, min_size=1, max_size=6), min_size=1, max_size=8)


def _rkey(collection: str, index: int) -> str:
    return k(f"key{index}") if collection == POST else f"key-{index}"


def _value(collection: str, index: int) -> dict[str, Any]:
    return post(f"v{index}") if collection == POST else {"$type": NOTE, "n": index}


def _interpret(
    batch: list[tuple[str, int, int, int]], model: dict[str, CID]
) -> tuple[list[WriteOp], set[str]]:
    """Turn abstract ops into valid requests for the model's state; one op per path."""
    ops: list[WriteOp] = []
    paths: set[str] = set()

    def add(op: WriteOp, path: str) -> None:
        if path not in paths:
            paths.add(path)
            ops.append(op)

    for kind, c, key, v in batch:
        collection = COLLECTIONS[c]
        rkey = _rkey(collection, key)
        path = f"{collection}/{rkey}"
        value = _value(collection, v)
        present = path in model
        if kind == "create":
            add(UpdateOp(collection, rkey, value) if present else CreateOp(collection, rkey, value), path)
        elif kind == "create-tid":
            ops.append(CreateOp(collection, None, value))
        elif kind == "put":
            add(UpdateOp(collection, rkey, value), path)
        elif kind == "update":
            add(UpdateOp(collection, rkey, value, must_exist=present), path)
        elif kind == "delete":
            add(DeleteOp(collection, rkey, must_exist=present), path)
        else:  # wipe the collection
            for existing in sorted(model):
                if existing.startswith(collection + "/"):
                    add(DeleteOp(collection, existing.split("/", 1)[1], must_exist=True), existing)
    return ops, paths


# ``database`` is function-scoped but safe to share: every example writes only its own new account
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=_batches)
def test_random_batches_keep_index_tree_and_events_consistent(
    database: str | None, batches: list[list[Any]]
) -> None:
    writer = RepoWriter(REGISTRY)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_host_store(tmp, database)
        try:
            account = new_account(store)
            did, key = account.did, account.key
            model: dict[str, CID] = {}
            for batch in batches:
                ops, _ = _interpret(batch, model)
                if len(ops) > 200:
                    ops = ops[:200]
                before = store.repo_head(did)
                out = writer.apply(store, did, key, ops)
                for op, result in zip(ops, out.results, strict=True):
                    written = result.uri.split("/", 3)[3]
                    if isinstance(op, DeleteOp):
                        model.pop(written, None)
                    else:
                        assert result.cid is not None
                        model[written] = result.cid
                if out.commit is None:
                    assert store.repo_head(did) == before
                index = records(store, did)
                assert index == model
                head = store.repo_head(did)
                assert head is not None
                assert dict(Repo.open(store.repo_blocks(did), head.cid).walk()) == index
            assert check_all(account) == model
        finally:
            store.close()
