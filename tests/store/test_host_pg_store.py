"""The host store's own PostgreSQL write paths: the pipelined transaction and the bulk import by COPY.

``PostgresStore.transaction`` sends a commit's statements in psycopg's
pipeline mode (an error surfaces at the next read or at ``COMMIT``, not at
the statement), and ``stage_blocks``/``replace_repo`` send an import by
``COPY`` and read the staged blocks ahead. The contract suite runs them on
ordinary data; these tests put them where they could go wrong: a statement
failing mid-pipeline, an error the caller swallows, a CAR with repeated
blocks and blob references, a CAR in an order the reads ahead do not expect.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from store_support import (
    POST,
    all_records,
    check_repo,
    commit,
    create,
    new_account,
    new_did,
    post,
    stored_blocks,
)

from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import WriteAborted
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.host.importer import import_car
from atrepo.store import postgres
from atrepo.store.postgres import HOST_SCHEMA, PostgresStore

#: A record key the test's trigger refuses (a statement failing on the server, mid-pipeline).
REFUSED = "refused"


@pytest.fixture
def store(pg_url: str, tmp_path: Path) -> Iterator[PostgresStore]:
    """One pooled connection: a write after a failure runs on the connection that failed."""
    opened = PostgresStore(pg_url, tmp_path / "data", pool_size=1)
    yield opened
    opened.close()


def _refuse_records(url: str) -> None:
    """A trigger that makes the server fail the INSERT of a record keyed ``REFUSED``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {HOST_SCHEMA}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF NEW.rkey = '{REFUSED}' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {HOST_SCHEMA}.records "
            f"FOR EACH ROW EXECUTE FUNCTION {HOST_SCHEMA}.refuse()"
        )


def test_a_statement_failing_mid_pipeline_rolls_the_whole_commit_back(
    store: PostgresStore, pg_url: str
) -> None:
    did, key = new_account(store, writes=[create("a")])
    _refuse_records(pg_url)
    head, seq = store.repo_head(did), store.head_seq()
    blocks, records = stored_blocks(store, did), all_records(store, did)

    # the records INSERT fails; the statements queued after it are skipped, the COMMIT never runs
    with pytest.raises(psycopg.Error, match="refused by the test"):
        commit(store, did, key, [create(REFUSED)])

    assert store.repo_head(did) == head
    assert store.head_seq() == seq
    assert store.read_events(seq, 10) == []
    assert stored_blocks(store, did) == blocks
    assert all_records(store, did) == records
    # the next write, on the same (only) pooled connection, commits with the next seq
    result, event = commit(store, did, key, [create("b")])
    assert event.seq == seq + 1
    assert store.repo_head(did).cid == result.commit.cid  # type: ignore[union-attr]
    assert set(check_repo(store, did, key)) == {f"{POST}/a", f"{POST}/b"}


def test_an_error_the_caller_swallows_still_fails_the_commit(store: PostgresStore, pg_url: str) -> None:
    did, key = new_account(store, writes=[create("a")])
    _refuse_records(pg_url)
    head, seq = store.repo_head(did), store.head_seq()

    with pytest.raises(WriteAborted), store.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create(REFUSED)], key)
        # psycopg raises the INSERT's error where it first reads the server's answer: at the latest
        # the seq read (append_event syncs the pipeline), sooner if the answer is already in when a
        # later statement of apply_commit is sent. Wherever it comes, the caller swallows it.
        with contextlib.suppress(psycopg.Error):
            tx.apply_commit(result)
        with contextlib.suppress(psycopg.Error, WriteAborted):
            tx.append_event(result.to_event)

    assert store.repo_head(did) == head
    assert store.head_seq() == seq
    commit(store, did, key, [create("b")])
    assert set(check_repo(store, did, key)) == {f"{POST}/a", f"{POST}/b"}


def test_writes_of_several_repositories_and_events_keep_their_order(store: PostgresStore) -> None:
    accounts = [new_account(store) for _ in range(3)]
    first = store.head_seq()
    for round_ in range(4):
        for did, key in accounts:
            commit(store, did, key, [create(f"r{round_}"), create(f"s{round_}")])
    events = store.read_events(first, 100)
    assert [event.seq for event in events] == list(range(first + 1, first + 13))
    for did, key in accounts:
        assert len(check_repo(store, did, key)) == 8


# --- imports ---------------------------------------------------------------------------------


def _deactivated_account(store: PostgresStore, did: str, key: PrivateKey) -> None:
    with store.transaction(did) as tx:
        tx.create_account(handle=f"{did[-8:]}.test", signing_key=key.to_bytes(), status="deactivated")
        tx.apply_commit(Repo.create(did, key, []))


def _image(text: str, blob: CID, times: int) -> dict[str, object]:
    ref = {"$type": "blob", "ref": blob, "mimeType": "image/png", "size": 64}
    images = [{"alt": str(n), "image": ref} for n in range(times)]
    return post(text, embed={"$type": "app.bsky.embed.images", "images": images})


def _car(repo: Repo, *, order: str = "preorder", repeat: int = 0, seed: int = 7) -> bytes:
    blocks = list(repo.export_blocks())
    rng = random.Random(seed)
    blocks += [rng.choice(blocks) for _ in range(repeat)]  # blocks the CAR holds twice
    if order == "shuffled":
        rng.shuffle(blocks)
    return write_car([repo.commit.cid], blocks)


def _grown(repo: Repo, key: PrivateKey, prefix: str, count: int) -> Repo:
    """``repo`` with ``count`` more records, a commit per 200 (the most one commit takes)."""
    for start in range(0, count, 200):
        writes = [create(f"{prefix}{n:09d}") for n in range(start, min(count, start + 200))]
        repo = repo.apply_writes(writes, key).repo
    return repo


def _import(store: PostgresStore, did: str, key: PrivateKey, car: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"import-{random.getrandbits(32):08x}.car"
    path.write_bytes(car)
    import_car(store, did, path, key.public_key)


def test_an_import_with_repeated_blocks_and_blob_references_is_stored_once(
    store: PostgresStore, tmp_path: Path
) -> None:
    did, key = new_did(), PrivateKey.generate("k256")
    blob = CID.for_raw(b"an image")
    same = post("the same bytes at two paths")
    writes = [
        Write("create", POST, "3twin0000000a", same),
        Write("create", POST, "3twin0000000b", same),
        Write("create", POST, "3image000000a", _image("twice", blob, 2)),
        *(create(f"3more{n:08d}") for n in range(40)),
    ]
    repo = Repo.create(did, key, writes).repo
    _deactivated_account(store, did, key)

    _import(store, did, key, _car(repo, repeat=25), tmp_path)

    assert store.repo_head(did).cid == repo.commit.cid  # type: ignore[union-attr]
    assert check_repo(store, did, key) == dict(repo.walk())
    assert store.blob_records(did, blob) == [f"{POST}/3image000000a"]
    assert [cid for cid, _ in store.list_missing_blobs(did)] == [blob]


def test_an_import_replaces_the_last_and_reads_any_block_order(
    store: PostgresStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small batches and windows: many COPYs, each after reads of the staged blocks (which a running
    # COPY would refuse), and a read-ahead cache that fills up
    monkeypatch.setattr(postgres, "_COPY_BATCH", 37)
    monkeypatch.setattr(postgres, "_READ_AHEAD_MAX", 48)
    did, key = new_did(), PrivateKey.generate("k256")
    _deactivated_account(store, did, key)
    # enough blocks for the reads ahead to give up on a shuffled CAR and try again
    first = _grown(Repo.create(did, key, []).repo, key, "3aaa", 700)
    second = first.apply_writes([create(f"3bbb{n:09d}") for n in range(150)], key)

    _import(store, did, key, _car(first, order="shuffled", repeat=10), tmp_path)
    assert check_repo(store, did, key) == dict(first.walk())

    # again, on the same pooled connection (its temporary tables gone with the last transaction)
    _import(store, did, key, _car(second.repo, order="preorder"), tmp_path)
    assert store.repo_head(did).cid == second.commit.cid  # type: ignore[union-attr]
    assert check_repo(store, did, key) == dict(second.repo.walk())
    assert store.integrity_check() == []
