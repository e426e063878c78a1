"""Merkle Search Tree: bulk build and single inserts with the root recomputed (issue 3, benchmarks 1-2).

* ``bulk build``: every (path, record CID) of the 100k-record fixture, sorted,
  into a tree and its root CID (which encodes and hashes every node). atrepo has
  a one-pass builder; atmst and arroba have none, so they insert the keys one
  by one, in key order, into an empty tree, which is how their users build one.
* ``inserts + root``: the 1,000 records the fixture's firehose creates, put one
  after another into the 100k-record tree, asking for the new root CID after
  each. The tree is opened once from a block store holding the base tree's
  nodes; each sample starts again from that base (every library caches decoded
  nodes as it normally does, so samples after the first run warm).

Every sample checks its final root against the one atrepo computed when the
fixture was made (and, for builds, ``MST.build``), so a peer that builds a
different tree is reported as an error, not timed. The MarshalX SDK has no MST.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench import repo_fixtures
from bench.harness import Case, Contender, Runner, Target, active_config, expect, register

_NO_MST_SDK = "no MST in the SDK (atproto_core has CAR and CID, no tree)"
_ATMST = ("atmst", "cbrrr")
_ARROBA = ("arroba", "dag_cbor", "multiformats")


@functools.cache
def _fixture(quick: bool) -> repo_fixtures.RepoFixture:
    return repo_fixtures.load(*repo_fixtures.sizes(quick))


@functools.cache
def _atrepo_root(quick: bool, count: int) -> bytes:
    """atrepo's root CID for the first ``count`` sorted items (the reference answer)."""
    from atrepo.core.cid import CID
    from atrepo.core.mst import MST

    fx = _fixture(quick)
    if count == fx.records:
        return fx.data
    return MST.build([(k, CID(c)) for k, c in fx.items()[:count]]).root_cid.raw


def multiformats_cids(raws: list[bytes]) -> list[Any]:
    """arroba's CID objects (``multiformats.CID``) for binary CIDs, made quickly (setup only).

    ``CID.decode`` type-checks its arguments at run time (about 1 ms a CID), which
    would spend minutes preparing 100k inputs; every CID here is a CIDv1
    sha-256, so the first is decoded normally and the rest are made from its
    parts by the constructor ``CID.decode`` itself ends in. Spot-checked.
    """
    from multiformats import CID

    if not raws:
        return []
    first = CID.decode(raws[0])
    make = CID._new_instance  # the same instances decode() returns
    by_codec = {raws[0][:2]: first.codec}
    out = []
    for raw in raws:
        codec = by_codec.get(raw[:2])
        if codec is None:
            codec = by_codec[raw[:2]] = CID.decode(raw).codec
        out.append(make(CID, first.base, 1, codec, first.hashfun, raw[2:]))
    for i in range(0, len(raws), max(1, len(raws) // 16)):
        expect(out[i] == CID.decode(raws[i]) and bytes(out[i]) == raws[i], "fast CID differs from decode")
    return out


def _check(got: bytes, want: bytes, what: str) -> None:
    expect(got == want, f"{what}: root {got.hex()[:16]}... differs from atrepo's {want.hex()[:16]}...")


# --- bulk build --------------------------------------------------------------------------------------


def _build_atrepo(quick: bool) -> Runner:
    from atrepo.core.cid import CID
    from atrepo.core.mst import MST

    items = [(k, CID(c)) for k, c in _fixture(quick).items()]
    want = _atrepo_root(quick, len(items))

    def run(n: int) -> None:
        _check(MST.build(items[:n]).root_cid.raw, want, "bulk build")

    return run


def _build_atmst(quick: bool, count: int) -> Runner:
    from atmst.blockstore import MemoryBlockStore
    from atmst.mst.node_store import NodeStore
    from atmst.mst.node_wrangler import NodeWrangler
    from cbrrr import CID

    items = [(k, CID(c)) for k, c in _fixture(quick).items()[:count]]
    want = _atrepo_root(quick, count)

    def run(n: int) -> None:
        store = NodeStore(MemoryBlockStore())
        wrangler = NodeWrangler(store)
        root = store.get_node(None).cid
        for key, cid in items[:n]:
            root = wrangler.put_record(root, key, cid)
        _check(bytes(root), want, "put_record build")

    return run


def _build_arroba(quick: bool, count: int) -> Runner:
    from arroba.mst import MST
    from arroba.storage import MemoryStorage

    chosen = _fixture(quick).items()[:count]
    items = list(zip([k for k, _ in chosen], multiformats_cids([c for _, c in chosen]), strict=True))
    want = _atrepo_root(quick, count)

    def run(n: int) -> None:
        tree = MST.create(storage=MemoryStorage())
        for key, cid in items[:n]:
            tree = tree.add(key, cid)
        _check(bytes(tree.get_pointer()), want, "add build")

    return run


# --- inserts into a large tree -----------------------------------------------------------------------


def _inserts_atrepo(quick: bool) -> Runner:
    from atrepo.core.blocks import BlockMap
    from atrepo.core.cid import CID
    from atrepo.core.mst import MST

    fx = _fixture(quick)
    base = MST.load(BlockMap((CID(c), d) for c, d in fx.node_blocks()), CID(fx.data))
    news = [(k, CID(c)) for k, c in fx.new_items()]

    def run(n: int) -> None:
        tree = base
        root = None
        for key, cid in news[:n]:
            tree = tree.set(key, cid)
            root = tree.root_cid
        assert root is not None
        _check(root.raw, fx.final_data, "inserts")

    return run


def _inserts_atmst(quick: bool) -> Runner:
    from atmst.blockstore import MemoryBlockStore
    from atmst.mst.node_store import NodeStore
    from atmst.mst.node_wrangler import NodeWrangler
    from cbrrr import CID

    fx = _fixture(quick)
    wrangler = NodeWrangler(NodeStore(MemoryBlockStore(dict(fx.node_blocks()))))
    base = CID(fx.data)
    news = [(k, CID(c)) for k, c in fx.new_items()]

    def run(n: int) -> None:
        root = base
        for key, cid in news[:n]:
            root = wrangler.put_record(root, key, cid)
        _check(bytes(root), fx.final_data, "put_record inserts")

    return run


def _inserts_arroba(quick: bool) -> Runner:
    from arroba.mst import MST
    from arroba.storage import Block, MemoryStorage
    from multiformats import CID

    fx = _fixture(quick)
    storage = MemoryStorage()
    nodes = fx.node_blocks()
    for cid, (_, data) in zip(multiformats_cids([c for c, _ in nodes]), nodes, strict=True):
        storage.blocks[cid] = Block(cid=cid, encoded=data)
    base = MST.load(storage=storage, cid=CID.decode(fx.data))
    news = [(k, CID.decode(c)) for k, c in fx.new_items()]

    def run(n: int) -> None:
        tree = base
        root: Any = None
        for key, cid in news[:n]:
            tree = tree.add(key, cid)
            root = tree.get_pointer()
        _check(bytes(root), fx.final_data, "add inserts")

    return run


def _lazy(make: Callable[..., Runner], *args: Any) -> Callable[[], Runner]:
    return functools.partial(make, *args)


#: Peers insert one key at a time (~3k keys/s at 100k keys, ~30 s a run), so
#: they build the full tree only when that stays under about a minute a run.
PEER_BUILD_KEYS = 100_000


@register("mst", "MST bulk build and single inserts with root recompute", order=30)
def build() -> list[Case]:
    """The bulk-build and insert cases at the fixture size of this run."""
    quick = active_config().quick
    records, events = repo_fixtures.sizes(quick)
    peer_keys = min(records, PEER_BUILD_KEYS)
    peer_note = "" if peer_keys == records else f"; measured on the first {peer_keys:,} keys"
    build_case = Case(
        f"bulk build {records:,} keys (keys/s)",
        f"build an MST of {records:,} sorted (path, CID) pairs and compute its root CID",
        (
            Contender("atrepo", "atrepo MST.build", _lazy(_build_atrepo, quick), ("atrepo",), ops=records),
            Contender(
                "atmst",
                "atmst NodeWrangler",
                _lazy(_build_atmst, quick, peer_keys),
                _ATMST,
                note="no bulk builder: put_record of each key in key order into an empty tree" + peer_note,
                ops=peer_keys,
            ),
            Contender(
                "arroba",
                "arroba MST.add",
                _lazy(_build_arroba, quick, peer_keys),
                _ARROBA,
                note="no bulk builder: add() of each key in key order, then get_pointer()" + peer_note,
                ops=peer_keys,
            ),
            Contender("atproto", "atproto", unsupported=_NO_MST_SDK),
        ),
        target=Target(300_000, "keys/s"),
        max_reps=3,
    )
    insert_case = Case(
        f"{events:,} inserts + root on {records:,} (ops/s)",
        f"insert {events:,} new records one at a time into a {records:,}-record tree, root CID after each",
        (
            Contender("atrepo", "atrepo MST.set", _lazy(_inserts_atrepo, quick), ("atrepo",), ops=events),
            Contender(
                "atmst",
                "atmst NodeWrangler",
                _lazy(_inserts_atmst, quick),
                _ATMST,
                note="put_record returns the new root CID; it also stores each new node",
                ops=events,
            ),
            Contender(
                "arroba",
                "arroba MST.add",
                _lazy(_inserts_arroba, quick),
                _ARROBA,
                note="add(), then get_pointer() for the root",
                ops=events,
            ),
            Contender("atproto", "atproto", unsupported=_NO_MST_SDK),
        ),
        target=Target(20_000, "ops/s"),
        max_reps=5,
    )
    return [build_case, insert_case]
