"""Repositories: writes and their rules, ops and chains, revs, reading, building, exporting."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.blocks import BlockMap, LayeredSource
from atrepo.core.car import CarReader, read_car, write_car
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.errors import InvalidWrite, LimitExceeded, MissingBlock
from atrepo.core.keys import PrivateKey
from atrepo.core.mst import MST
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.tid import DEFAULT_CLOCK, tid_from_parts, tid_to_parts

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
FOLLOW = "app.bsky.graph.follow"
KEY = PrivateKey.generate("k256")


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": "2024-05-01T12:34:56.789Z"}


def cid_of(value: Any) -> CID:
    return CID.for_dag_cbor(cbor.encode(value))


def create(collection: str, rkey: str, value: Any = None) -> Write:
    return Write("create", collection, rkey, value if value is not None else post(rkey))


def base_repo() -> CommitResult:
    return Repo.create(DID, KEY, [create(POST, "a"), create(POST, "b"), create(LIKE, "x")])


def records_of(repo: Repo) -> dict[str, CID]:
    return dict(repo.walk())


# --- create / update / delete --------------------------------------------------------


def test_create_empty_repo() -> None:
    result = Repo.create(DID, KEY)
    repo = result.repo
    assert repo.data == EMPTY_MST_ROOT
    assert repo.did == DID
    assert result.ops == ()
    assert result.since is None and result.prev_data is None
    assert records_of(repo) == {}
    assert repo.collections() == []
    assert EMPTY_MST_ROOT in result.blocks and result.commit.cid in result.blocks
    result.commit.verify(KEY.public_key)


def test_create_update_delete() -> None:
    first = base_repo()
    repo = first.repo
    assert [op.action for op in first.ops] == ["create"] * 3
    cid_a = cid_of(post("a"))
    assert repo.get_record(POST, "a") == (cid_a, post("a"))
    assert repo.get_record_cid(POST, "missing") is None
    assert repo.get_record(POST, "missing") is None

    second = repo.apply_writes(
        [
            Write("update", POST, "a", post("a2")),
            Write("delete", POST, "b"),
            create(FOLLOW, "f", {"$type": FOLLOW, "subject": DID}),
        ],
        KEY,
    )
    new = second.repo
    assert new.get_record(POST, "a") == (cid_of(post("a2")), post("a2"))
    assert new.get_record(POST, "b") is None
    assert new.get_record(FOLLOW, "f") is not None
    assert set(records_of(new)) == {f"{POST}/a", f"{LIKE}/x", f"{FOLLOW}/f"}
    # the old view is untouched
    assert repo.get_record(POST, "a") == (cid_a, post("a"))
    assert repo.get_record_cid(POST, "b") is not None
    second.commit.verify(KEY.public_key)


def test_ops_carry_previous_cids() -> None:
    first = base_repo()
    old = {f"{POST}/a": cid_of(post("a")), f"{POST}/b": cid_of(post("b"))}
    result = first.repo.apply_writes(
        [Write("update", POST, "a", post("new")), Write("delete", POST, "b"), create(POST, "c")], KEY
    )
    update, delete, made = result.ops
    assert (update.action, update.path, update.cid, update.prev) == (
        "update",
        f"{POST}/a",
        cid_of(post("new")),
        old[f"{POST}/a"],
    )
    assert (delete.action, delete.path, delete.cid, delete.prev) == (
        "delete",
        f"{POST}/b",
        None,
        old[f"{POST}/b"],
    )
    assert (made.action, made.path, made.cid, made.prev) == ("create", f"{POST}/c", cid_of(post("c")), None)
    # record blocks of creates and updates travel with the commit, deleted data does not
    assert result.blocks.get(update.cid) == cbor.encode(post("new"))
    assert made.cid in result.event_blocks and update.cid in result.event_blocks
    assert old[f"{POST}/b"] not in result.event_blocks
    assert old[f"{POST}/a"] not in result.event_blocks
    assert {old[f"{POST}/a"], old[f"{POST}/b"], first.commit.cid} <= result.removed


def test_update_to_identical_value_is_an_update_op() -> None:
    first = base_repo()
    result = first.repo.apply_writes([Write("update", POST, "a", post("a"))], KEY)
    (op,) = result.ops
    assert op.action == "update" and op.cid == op.prev
    assert result.repo.data == first.repo.data
    assert op.cid not in result.removed


def reachable(repo: Repo) -> set[CID]:
    return {cid for cid, _ in repo.export_blocks()}


def test_removed_blocks_are_the_unreferenced_ones() -> None:
    first = base_repo()
    result = first.repo.apply_writes(
        [Write("update", POST, "a", post("a2")), Write("delete", LIKE, "x")], KEY
    )
    before, after = reachable(first.repo), reachable(result.repo)
    assert result.removed == before - after
    assert set(result.blocks.cids()) == after - before


def test_removed_skips_a_value_rewritten_in_the_same_batch() -> None:
    first = base_repo()
    # the deleted record's exact value is written again at another path
    result = first.repo.apply_writes([Write("delete", POST, "a"), create(POST, "moved", post("a"))], KEY)
    assert cid_of(post("a")) not in result.removed
    assert result.removed == reachable(first.repo) - reachable(result.repo)


# --- write errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (create(POST, "a"), "cannot create app.bsky.feed.post/a: record already exists"),
        (Write("update", POST, "nope", post("x")), "cannot update app.bsky.feed.post/nope: no such record"),
        (Write("delete", POST, "nope"), "cannot delete app.bsky.feed.post/nope: no such record"),
        (Write("upsert", POST, "a", post("x")), "unknown action 'upsert'"),  # type: ignore[arg-type]
    ],
    ids=["create-existing", "update-missing", "delete-missing", "unknown-action"],
)
def test_write_against_state_errors(write: Write, message: str) -> None:
    repo = base_repo().repo
    with pytest.raises(InvalidWrite, match=message):
        repo.apply_writes([write], KEY)
    assert repo.get_record(POST, "a") == (cid_of(post("a")), post("a"))


@pytest.mark.parametrize(
    "writes",
    [
        [create(POST, "c"), create(POST, "c")],
        [create(POST, "c"), Write("delete", POST, "c")],
        [Write("update", POST, "a", post("1")), Write("delete", POST, "a")],
    ],
    ids=["create-twice", "create-delete", "update-delete"],
)
def test_same_path_twice_in_batch(writes: list[Write]) -> None:
    with pytest.raises(InvalidWrite, match="written twice in one commit"):
        base_repo().repo.apply_writes(writes, KEY)


def test_write_count_limit() -> None:
    repo = Repo.create(DID, KEY).repo
    too_many = [create(LIKE, f"r{i}", {"$type": LIKE}) for i in range(201)]
    with pytest.raises(LimitExceeded) as info:
        repo.apply_writes(too_many, KEY)
    assert info.value.limit == "MAX_COMMIT_OPS"
    assert (info.value.value, info.value.maximum) == (201, 200)
    assert "Too many writes" in str(info.value)
    with pytest.raises(LimitExceeded, match="MAX_COMMIT_OPS"):
        Repo.create(DID, KEY, too_many)
    result = repo.apply_writes(too_many[:200], KEY)
    assert len(result.ops) == 200
    assert len(records_of(result.repo)) == 200


@pytest.mark.parametrize(
    ("collection", "rkey", "message"),
    [
        ("post", "a", "is not a valid NSID"),
        ("app.bsky.feed.post/x", "a", "is not a valid NSID"),
        ("", "a", "is not a valid NSID"),
        (POST, "", "is not a valid record key"),
        (POST, ".", "is not a valid record key"),
        (POST, "..", "is not a valid record key"),
        (POST, "a/b", "is not a valid record key"),
        (POST, "sp ace", "is not a valid record key"),
        (POST, "x" * 513, "is not a valid record key"),
    ],
)
def test_invalid_collection_or_rkey(collection: str, rkey: str, message: str) -> None:
    repo = base_repo().repo
    for action in ("create", "update", "delete"):
        with pytest.raises(InvalidWrite, match=message):
            repo.apply_writes([Write(action, collection, rkey, post("x"))], KEY)  # type: ignore[arg-type]
    with pytest.raises(InvalidWrite, match="is not a valid"):
        Repo.build(DID, KEY, [(f"{collection}/{rkey}", post("x"))])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["not", "an", "object"], "top-level value must be an object"),
        ("text", "top-level value must be an object"),
        (None, "top-level value must be an object"),
        ({"text": "no type"}, r"record has no \$type"),
        ({"$type": ""}, r"\$type must be a non-empty string"),
        ({"$type": 7}, r"\$type must be a non-empty string"),
        ({"$type": POST, "score": 1.5}, "float is not a data-model value"),
        ({"$type": POST, "nested": [{"x": 2.0}]}, "float is not a data-model value"),
        ({"$type": POST, 1: "int key"}, "is not a string"),
    ],
)
def test_non_record_values(value: Any, message: str) -> None:
    repo = base_repo().repo
    with pytest.raises(InvalidWrite, match=message):
        repo.apply_writes([Write("create", POST, "new", value)], KEY)
    with pytest.raises(InvalidWrite, match=message):
        repo.apply_writes([Write("update", POST, "a", value)], KEY)


def test_record_size_limit() -> None:
    repo = base_repo().repo
    overhead = len(cbor.encode({"$type": POST, "blob": b"\x00" * 100_000})) - 100_000
    fits = {"$type": POST, "blob": b"\x00" * (limits.MAX_RECORD_BYTES - overhead)}
    assert len(cbor.encode(fits)) == limits.MAX_RECORD_BYTES
    result = repo.apply_writes([create(POST, "big", fits)], KEY)
    assert result.repo.get_record(POST, "big") == (cid_of(fits), fits)
    too_big = {"$type": POST, "blob": b"\x00" * (limits.MAX_RECORD_BYTES - overhead + 1)}
    with pytest.raises(LimitExceeded) as info:
        repo.apply_writes([create(POST, "big", too_big)], KEY)
    assert info.value.limit == "MAX_RECORD_BYTES"
    assert info.value.value == limits.MAX_RECORD_BYTES + 1
    assert f"{POST}/big" in str(info.value)
    with pytest.raises(LimitExceeded, match="MAX_RECORD_BYTES"):
        Repo.build(DID, KEY, [(f"{POST}/big", too_big)])


def car_size(result: CommitResult) -> int:
    return len(result.car_slice())


def test_event_size_limit_counts_the_whole_car() -> None:
    """The 2,000,000-byte limit is on the CAR slice (header, CIDs, varints), not just block data."""
    repo = base_repo().repo

    def batch(pad: int) -> list[Write]:
        return [
            create(POST, "big1", {"$type": POST, "blob": b"\x01" * 999_900}),
            create(POST, "big2", {"$type": POST, "blob": b"\x02" * pad}),
        ]

    probe = repo.apply_writes(batch(990_000), KEY)
    data_bytes = probe.event_blocks.byte_size()
    framing = car_size(probe) - data_bytes
    assert framing > 0
    # choose the second record so that block data fits but the CAR does not
    pad = 990_000 + (limits.MAX_COMMIT_BLOCKS_BYTES - data_bytes) - framing // 2
    with pytest.raises(LimitExceeded) as info:
        repo.apply_writes(batch(pad), KEY)
    assert info.value.limit == "MAX_COMMIT_BLOCKS_BYTES"
    ok = repo.apply_writes(batch(pad - framing), KEY)
    assert car_size(ok) <= limits.MAX_COMMIT_BLOCKS_BYTES


def test_create_checks_the_event_size_too() -> None:
    records = [create(POST, f"r{i}", {"$type": POST, "blob": bytes([i]) * 700_000}) for i in range(3)]
    with pytest.raises(LimitExceeded, match="MAX_COMMIT_BLOCKS_BYTES"):
        Repo.create(DID, KEY, records)
    # Repo.build is for imports and has no event to fit
    built = Repo.build(DID, KEY, [(w.path, w.record) for w in records])
    assert len(records_of(built)) == 3


# --- commits chain ---------------------------------------------------------------------------


def test_since_and_prev_data_chain() -> None:
    first = base_repo()
    assert first.since is None and first.prev_data is None
    results = [first]
    for i in range(4):
        results.append(results[-1].repo.apply_writes([create(POST, f"n{i}")], KEY))
    for before, after in itertools.pairwise(results):
        assert after.since == before.rev
        assert after.prev_data == before.commit.data
        assert after.rev > before.rev
        event = after.to_event(7, "2024-05-01T12:34:56.789Z")
        assert (event.since, event.prev_data, event.rev, event.commit) == (
            before.rev,
            before.commit.data,
            after.rev,
            after.commit.cid,
        )
        assert event.seq == 7 and event.repo == DID and event.ops == after.ops


def test_revs_increase_when_the_clock_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    stalled = 1_600_000_000_000_000
    monkeypatch.setattr(DEFAULT_CLOCK, "_now_micros", lambda: stalled)
    result = base_repo()
    revs = [result.rev]
    for i in range(5):
        result = result.repo.apply_writes([create(LIKE, f"l{i}", {"$type": LIKE})], KEY)
        revs.append(result.rev)
    assert revs == sorted(set(revs))
    assert len(revs) == 6


def test_rev_after_a_future_rev(monkeypatch: pytest.MonkeyPatch) -> None:
    # the shared clock keeps the raised floor: put it back afterwards for other tests
    monkeypatch.setattr(DEFAULT_CLOCK, "_last", DEFAULT_CLOCK._last)
    micros, _ = tid_to_parts(DEFAULT_CLOCK.next())
    ahead = tid_from_parts(micros + 3_600_000_000, 5)
    first = Repo.create(DID, KEY, [create(POST, "a")], rev=ahead)
    second = first.repo.apply_writes([create(POST, "b")], KEY)
    assert second.rev > ahead
    assert second.since == ahead


def test_explicit_rev_must_be_after_current() -> None:
    first = base_repo()
    repo = first.repo
    with pytest.raises(InvalidWrite, match="is not after the current rev"):
        repo.apply_writes([create(POST, "c")], KEY, rev=repo.rev)
    earlier = tid_from_parts(tid_to_parts(repo.rev)[0] - 1, 0)
    with pytest.raises(InvalidWrite, match="is not after the current rev"):
        repo.apply_writes([create(POST, "c")], KEY, rev=earlier)
    later = tid_from_parts(tid_to_parts(repo.rev)[0] + 10, 0)
    assert repo.apply_writes([create(POST, "c")], KEY, rev=later).rev == later


def test_resign_keeps_data_and_uses_the_new_key() -> None:
    first = base_repo()
    rotated = PrivateKey.generate("p256")
    result = first.repo.resign(rotated)
    assert result.ops == ()
    assert result.repo.data == first.repo.data
    assert result.rev > first.rev
    result.commit.verify(rotated.public_key)
    assert not result.commit.is_signed_by(KEY.public_key)


def test_sync_event_carries_only_the_commit() -> None:
    result = base_repo()
    event = result.to_sync_event(3, "2024-05-01T12:34:56.789Z")
    roots, blocks = read_car(event.blocks)
    assert roots == [result.commit.cid]
    assert list(blocks.cids()) == [result.commit.cid]
    assert (event.did, event.rev, event.seq) == (DID, result.rev, 3)


# --- reading back ----------------------------------------------------------------------------


def test_open_from_result_blocks() -> None:
    first = base_repo()
    store = BlockMap(first.blocks.items())
    opened = Repo.open(store, first.commit.cid)
    assert records_of(opened) == records_of(first.repo)
    assert opened.commit == first.commit

    second = first.repo.apply_writes([Write("update", POST, "a", post("z")), Write("delete", LIKE, "x")], KEY)
    store.update(second.blocks)
    again = Repo.open(store, second.commit.cid)
    assert records_of(again) == records_of(second.repo)
    assert again.get_record(POST, "a") == (cid_of(post("z")), post("z"))
    # a store that only has the new blocks layered over the old ones works the same
    layered = Repo.open(LayeredSource(second.blocks, BlockMap(first.blocks.items())), second.commit.cid)
    assert records_of(layered) == records_of(second.repo)


def test_open_missing_commit_or_node() -> None:
    first = base_repo()
    with pytest.raises(MissingBlock) as info:
        Repo.open(BlockMap(), first.commit.cid)
    assert info.value.cid == first.commit.cid
    only_commit = BlockMap([(first.commit.cid, first.commit.raw)])
    with pytest.raises(MissingBlock) as info:
        Repo.open(only_commit, first.commit.cid)
    assert info.value.cid == first.commit.data


def test_get_record_with_missing_record_block() -> None:
    first = base_repo()
    store = BlockMap(first.blocks.items())
    cid = cid_of(post("a"))
    store.discard(cid)
    repo = Repo.open(store, first.commit.cid)
    with pytest.raises(MissingBlock, match=r"record app\.bsky\.feed\.post/a") as info:
        repo.get_record(POST, "a")
    assert info.value.cid == cid


def test_list_records_pagination() -> None:
    rkeys = [f"k{i:03d}" for i in range(37)]
    repo = Repo.build(
        DID,
        KEY,
        [(f"{POST}/{r}", post(r)) for r in rkeys]
        + [(f"{LIKE}/{r}", {"$type": LIKE}) for r in rkeys[:5]]
        + [(f"{FOLLOW}/f", {"$type": FOLLOW})],
    )
    forward: list[str] = []
    cursor = None
    while True:
        page = repo.list_records(POST, cursor=cursor, limit=10)
        forward += [rkey for rkey, _ in page]
        if len(page) < 10:
            break
        cursor = page[-1][0]
    assert forward == rkeys

    backward: list[str] = []
    cursor = None
    while True:
        page = repo.list_records(POST, cursor=cursor, limit=8, reverse=True)
        backward += [rkey for rkey, _ in page]
        if len(page) < 8:
            break
        cursor = page[-1][0]
    assert backward == rkeys[::-1]

    assert repo.list_records(POST, limit=3) == [(r, cid_of(post(r))) for r in rkeys[:3]]
    assert [r for r, _ in repo.list_records(POST, cursor="k010", limit=2)] == ["k011", "k012"]
    assert [r for r, _ in repo.list_records(POST, cursor="k010", limit=2, reverse=True)] == ["k009", "k008"]
    assert [r for r, _ in repo.list_records(LIKE, limit=100)] == rkeys[:5]
    assert [r for r, _ in repo.list_records(LIKE, limit=100, reverse=True)] == rkeys[:5][::-1]
    assert repo.list_records("app.bsky.feed.repost") == []
    assert repo.list_records(POST, cursor="zzz") == []
    assert repo.list_records(POST, cursor="a", reverse=True) == []


def test_collections() -> None:
    names = [
        "app.bsky.feed.like",
        "app.bsky.feed.post",
        "app.bsky.feed.post0",
        "app.bsky.feed.postA",
        "app.bsky.feed.post.x",
        "com.example.z",
    ]
    records = [(f"{name}/{i}", {"$type": name}) for name in names for i in range(3)]
    repo = Repo.build(DID, KEY, records)
    # key order: "post.x/" sorts before "post/" because '.' < '/'
    assert repo.collections() == sorted(names, key=lambda name: name + "/")
    # a repo written commit by commit agrees
    result = Repo.create(DID, KEY, [create("com.example.z", "1", {"$type": "x"})])
    assert result.repo.collections() == ["com.example.z"]
    result = result.repo.apply_writes([Write("delete", "com.example.z", "1")], KEY)
    assert result.repo.collections() == []


def test_build_equals_one_by_one() -> None:
    records = [(f"{[POST, LIKE, FOLLOW][i % 3]}/r{i:04d}", post(str(i))) for i in range(450)]
    built = Repo.build(DID, KEY, reversed(records))
    result = Repo.create(DID, KEY)
    for start in range(0, len(records), 150):
        chunk = records[start : start + 150]
        writes = [Write("create", *path.split("/"), value) for path, value in chunk]  # type: ignore[misc]
        result = result.repo.apply_writes(writes, KEY)
    assert built.data == result.repo.data
    assert records_of(built) == records_of(result.repo)
    # one write at a time, in another order
    single = Repo.create(DID, KEY)
    for path, value in records[::-7]:
        collection, rkey = path.split("/")
        single = single.repo.apply_writes([Write("create", collection, rkey, value)], KEY)
    subset = Repo.build(DID, KEY, records[::-7])
    assert subset.data == single.repo.data


def test_build_rejects_duplicate_paths() -> None:
    with pytest.raises(InvalidWrite, match=f"{POST}/a appears twice"):
        Repo.build(DID, KEY, [(f"{POST}/a", post("1")), (f"{POST}/b", post("2")), (f"{POST}/a", post("3"))])


def test_build_empty_and_into_given_source() -> None:
    empty = Repo.build(DID, KEY, [])
    assert empty.data == EMPTY_MST_ROOT
    assert list(empty.walk()) == []
    store = BlockMap()
    repo = Repo.build(DID, KEY, [(f"{POST}/a", post("a"))], source=store, rev="3kgnjdpmjtc2b")
    assert repo.rev == "3kgnjdpmjtc2b"
    assert records_of(Repo.open(store, repo.commit.cid)) == {f"{POST}/a": cid_of(post("a"))}


# --- export ------------------------------------------------------------------------------------


def test_export_blocks_is_streamable_pre_order() -> None:
    repo = Repo.build(DID, KEY, [(f"{POST}/{i:04d}", post(str(i))) for i in range(300)])
    blocks = list(repo.export_blocks())
    assert blocks[0] == (repo.commit.cid, repo.commit.raw)
    assert blocks[1][0] == repo.data
    node_cids = list(repo.tree.node_cids())
    exported = [cid for cid, _ in blocks]
    assert [c for c in exported if c in set(node_cids)] == node_cids
    assert len(exported) == len(set(exported)) == 1 + len(node_cids) + 300
    # every record comes right before the subtree after it: records appear in key order
    records = [cid for _, cid in repo.walk()]
    assert [c for c in exported if c not in set(node_cids) and c != repo.commit.cid] == records
    for cid, data in blocks:
        assert CID.for_dag_cbor(data) == cid


def test_export_empty_repo() -> None:
    repo = Repo.create(DID, KEY).repo
    blocks = list(repo.export_blocks())
    assert [cid for cid, _ in blocks] == [repo.commit.cid, EMPTY_MST_ROOT]


def test_export_with_missing_record_block() -> None:
    first = base_repo()
    store = BlockMap(first.blocks.items())
    store.discard(cid_of(post("b")))
    with pytest.raises(MissingBlock, match=r"record app\.bsky\.feed\.post/b"):
        list(Repo.open(store, first.commit.cid).export_blocks())


# --- property: writes, opens and exports agree with a model ------------------------------------

COLLECTIONS = (POST, LIKE, FOLLOW)


@st.composite
def batches(draw: st.DrawFn) -> list[list[tuple[int, int, int]]]:
    """Commits of (collection, rkey, choice) triples; choice picks update vs delete."""
    op = st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 9))
    return draw(st.lists(st.lists(op, min_size=1, max_size=20), min_size=1, max_size=5))


def to_writes(plan: list[tuple[int, int, int]], model: dict[str, Any], tag: int) -> list[Write]:
    """Valid writes from a plan: create when absent, else update or delete."""
    writes: list[Write] = []
    seen: set[str] = set()
    for c, r, choice in plan:
        collection, rkey = COLLECTIONS[c], f"r{r}"
        path = f"{collection}/{rkey}"
        if path in seen:
            continue
        seen.add(path)
        value = {"$type": collection, "n": tag * 1000 + r, "v": choice}
        if path not in model:
            writes.append(Write("create", collection, rkey, value))
            model[path] = value
        elif choice < 6:
            writes.append(Write("update", collection, rkey, value))
            model[path] = value
        else:
            writes.append(Write("delete", collection, rkey))
            del model[path]
    return writes


@settings(max_examples=150, deadline=None)
@given(batches())
def test_model_open_and_export(plan: list[list[tuple[int, int, int]]]) -> None:
    model: dict[str, Any] = {}
    result = Repo.create(DID, KEY, to_writes(plan[0], model, 0))
    store = BlockMap(result.blocks.items())
    for tag, commit_plan in enumerate(plan[1:], 1):
        writes = to_writes(commit_plan, model, tag)
        before = result.repo
        result = result.repo.apply_writes(writes, KEY)
        store.update(result.blocks)
        # records are distinct here, so removed is exactly what is no longer reachable
        assert result.removed == reachable(before) - reachable(result.repo)
        expected_actions = [w.action for w in writes]
        assert [op.action for op in result.ops] == expected_actions
    repo = result.repo
    expected = {path: cid_of(value) for path, value in sorted(model.items())}
    assert records_of(repo) == expected
    assert list(repo.walk()) == list(expected.items())
    # the stored blocks alone reopen it, and the tree equals a fresh build
    opened = Repo.open(store, result.commit.cid)
    assert list(opened.walk()) == list(expected.items())
    assert Repo.build(DID, KEY, model.items()).data == repo.data
    assert MST.build(expected.items()).root_cid == repo.data
    assert sorted({p.split("/")[0] for p in model}) == repo.collections()
    # export -> CAR -> read back: the same blocks, the commit as root
    blocks = list(repo.export_blocks())
    car = write_car([repo.commit.cid], blocks)
    roots, read = read_car(car)
    assert roots == [repo.commit.cid]
    assert list(read.items()) == blocks
    reader = CarReader(io.BytesIO(car))
    assert [(cid, data) for cid, data, _ in reader] == blocks
    again = Repo.open(read, repo.commit.cid)
    assert list(again.walk()) == list(expected.items())


def test_event_blocks_hold_the_node_data_names() -> None:
    """Issue 7: the empty node after the last delete, and the root of a commit without ops."""
    first = Repo.create(DID, KEY, [create(POST, "only")])
    emptied = first.repo.apply_writes([Write("delete", POST, "only")], KEY)
    assert emptied.commit.data == EMPTY_MST_ROOT
    assert emptied.event_blocks.get(EMPTY_MST_ROOT) == cbor.encode({"e": [], "l": None})
    resigned = base_repo().repo.resign(KEY)
    assert resigned.ops == () and resigned.commit.data in resigned.event_blocks
    # the CAR slice names one root, the commit
    roots, _ = read_car(emptied.car_slice())
    assert roots == [emptied.commit.cid]
