"""Every ``#commit`` our producer emits validates and chains, and validation reads only what it needs.

Random histories of write batches (creates, updates, deletes; batches that
empty the repository, re-signs without ops, re-creating deleted keys, dropping
a whole collection) go through ``validate_commit`` with the real key and
``check_chain``. Then the blocks inversion actually reads are logged, and an
event cut down to exactly those (plus commit and records) must still validate,
while dropping any one of them must fail on that missing block (issue 7).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core.blocks import BlockSource
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidCommitEvent
from atrepo.core.events import CommitEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.mst import key_layer
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.validate import Chain, RepoState, check_chain, check_tree_ops, state_after, validate_commit

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
TIME = "2024-05-01T12:34:56.789Z"
KEY = PrivateKey.generate("k256")
PUB = KEY.public_key


def _rkeys() -> list[str]:
    """A small pool (so keys get deleted and created again) spanning layers 0 to 2."""
    by_layer: dict[int, list[str]] = {0: [], 1: [], 2: []}
    i = 0
    while len(by_layer[0]) < 8 or len(by_layer[1]) < 4 or len(by_layer[2]) < 2:
        rkey = f"k{i}"
        layer = key_layer(f"{POST}/{rkey}".encode())
        if layer in by_layer and len(by_layer[layer]) < {0: 8, 1: 4, 2: 2}[layer]:
            by_layer[layer].append(rkey)
        i += 1
    return sorted(by_layer[0] + by_layer[1] + by_layer[2])


RKEYS = _rkeys()
PATHS = [(c, r) for c in (POST, LIKE) for r in RKEYS]


def record(n: int) -> dict[str, Any]:
    return {"$type": POST, "text": f"v{n}"}


class LoggingSource:
    """A block source that records every CID asked of it, in order."""

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner
        self.read: list[CID] = []

    def get(self, cid: CID) -> bytes | None:
        self.read.append(cid)
        return self.inner.get(cid)


def _batch(repo: Repo, data: st.DataObject, counter: list[int]) -> list[Write]:
    """One batch of writes valid for ``repo``, of a randomly drawn kind."""
    present = {tuple(path.split("/", 1)) for path, _ in repo.walk()}
    kind = data.draw(st.sampled_from(["mixed", "mixed", "mixed", "empty", "collection", "resign"]))
    if kind == "resign":
        return []
    if kind == "empty":
        return [Write("delete", c, r) for c, r in sorted(present)]
    if kind == "collection":
        collection = data.draw(st.sampled_from([POST, LIKE]))
        return [Write("delete", c, r) for c, r in sorted(present) if c == collection]
    chosen = data.draw(st.lists(st.sampled_from(PATHS), unique=True, min_size=1, max_size=8))
    writes = []
    for collection, rkey in chosen:
        counter[0] += 1
        if (collection, rkey) in present:
            if data.draw(st.booleans()):
                writes.append(Write("delete", collection, rkey))
            else:
                writes.append(Write("update", collection, rkey, record(counter[0])))
        else:
            writes.append(Write("create", collection, rkey, record(counter[0])))
    return writes


def _history(data: st.DataObject) -> list[CommitResult]:
    counter = [0]
    initial = data.draw(st.lists(st.sampled_from(PATHS), unique=True, max_size=10))
    results = [Repo.create(DID, KEY, [Write("create", c, r, record(i)) for i, (c, r) in enumerate(initial)])]
    for _ in range(data.draw(st.integers(1, 6))):
        repo = results[-1].repo
        writes = _batch(repo, data, counter)
        results.append(repo.resign(KEY) if not writes else repo.apply_writes(writes, KEY))
    return results


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_event_validates_and_chains(data: st.DataObject) -> None:
    state: RepoState | None = None
    for seq, result in enumerate(_history(data), 1):
        event = result.to_event(seq, TIME)
        verified = validate_commit(event, PUB)
        assert verified.canonical and not verified.warnings
        assert result.repo.tree.canonical  # the producer never leaves an untrimmed root
        assert check_chain(state, verified) is (Chain.FIRST if state is None else Chain.NEXT)
        # The event carries the node ``data`` names, the empty node too.
        assert result.commit.data in result.event_blocks
        state = state_after(verified)


def _logged_reads(result: CommitResult) -> list[CID]:
    source = LoggingSource(result.event_blocks)
    check_tree_ops(source, result.commit.data, result.ops, result.prev_data)
    return source.read


def _minimal_event(result: CommitResult, nodes: list[CID], seq: int) -> CommitEvent:
    keep = set(nodes)
    records = {op.cid for op in result.ops if op.cid is not None}
    blocks = [
        (c, d) for c, d in result.event_blocks.items() if c in keep or c in records or c == result.commit.cid
    ]
    return dataclasses.replace(result.to_event(seq, TIME), blocks=write_car([result.commit.cid], blocks))


def check_exactly_the_logged_set(result: CommitResult, seq: int) -> None:
    """Commit + records + the logged nodes validate; without any one logged node, it fails on it."""
    reads = _logged_reads(result)
    assert len(reads) == len(set(reads))  # nothing is read twice
    assert set(reads) <= set(result.event_blocks.cids())
    validate_commit(_minimal_event(result, reads, seq), PUB)
    for cid in reads:
        with pytest.raises(InvalidCommitEvent) as info:
            validate_commit(_minimal_event(result, [c for c in reads if c != cid], seq), PUB)
        assert info.value.rule in ("forward", "inversion")
        assert f"missing block {cid}" in str(info.value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_events_cut_to_the_blocks_inversion_reads_still_validate(data: st.DataObject) -> None:
    for seq, result in enumerate(_history(data)[1:], 2):
        check_exactly_the_logged_set(result, seq)


def test_zero_op_commit_reads_no_tree_block() -> None:
    first = Repo.create(DID, KEY, [Write("create", POST, r, record(i)) for i, r in enumerate(RKEYS)])
    resigned = first.repo.resign(KEY)
    assert _logged_reads(resigned) == []
    check_exactly_the_logged_set(resigned, 2)


def test_emptying_commit_reads_the_empty_node() -> None:
    first = Repo.create(DID, KEY, [Write("create", POST, RKEYS[0], record(0))])
    emptied = first.repo.apply_writes([Write("delete", POST, RKEYS[0])], KEY)
    reads = _logged_reads(emptied)
    assert emptied.commit.data in reads
    check_exactly_the_logged_set(emptied, 2)
