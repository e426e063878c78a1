"""A realistic repository and its firehose, built once with atrepo and cached on disk.

``load(records, events)`` returns a :class:`RepoFixture`: a repository of
``records`` records (posts, likes and follows with TID record keys, in the
proportions of an active account), its full CAR export in the streamable
pre-order, and ``events`` single-record ``#commit`` frames (Sync 1.1, with
``prevData``) applied one after another on top of it. Everything is
deterministic (fixed seed, fixed signing key, fixed timestamps), so the cache
under ``/tmp/atrepo-bench-cache/`` (or ``$ATREPO_BENCH_CACHE``) is keyed by the
parameters and :data:`FIXTURE_VERSION` alone.

Everything a fixture hands out is library-neutral: CIDs are raw binary bytes,
blocks are ``(cid bytes, data bytes)``, so each contender converts them to its
own types during setup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

#: Bump when the fixture content or layout changes.
FIXTURE_VERSION = 1
CACHE_ROOT = Path(os.environ.get("ATREPO_BENCH_CACHE", "/tmp/atrepo-bench-cache"))

FULL_RECORDS, FULL_EVENTS = 100_000, 1_000
QUICK_RECORDS, QUICK_EVENTS = 2_000, 50

DID = "did:plc:benchrepo4k7x2vnq5ucz3ajm"
_COLLECTIONS = (
    ("app.bsky.feed.post", 40),
    ("app.bsky.feed.like", 45),
    ("app.bsky.graph.follow", 15),
)
_HISTORY_START = datetime(2023, 6, 1, tzinfo=UTC)
_HISTORY_END = datetime(2025, 6, 1, tzinfo=UTC)
_WORDS = (  # noqa: SIM905
    "the sync spec relay firehose repo commit tree record post like follow today just shipped new "
    "release notes about our small server running on one core fast strict python merkle search "
    "proof signature key rotation handle identity account feed thread reply quote image alt text "
    "coffee morning weekend garden cat dog music book train city rain sunny"
).split()


def signing_key_bytes() -> bytes:
    """The fixed secp256k1 scalar of every fixture (a benchmark key, not a secret)."""
    return hashlib.sha256(b"atrepo bench signing key v1").digest()


@dataclass(frozen=True)
class RepoFixture:
    """Paths and facts of one cached fixture (see the module docstring)."""

    directory: Path
    records: int
    events: int
    did: str
    did_key: str
    commit: bytes
    data: bytes
    rev: str
    final_data: bytes
    final_rev: str
    car_bytes_size: int

    @property
    def car_path(self) -> Path:
        """The full repository CAR: commit, root node, then pre-order with records."""
        return self.directory / "repo.car"

    def ordered_car_path(self, order: str) -> Path:
        """The same repository CAR with its blocks in ``order`` (see :data:`CAR_ORDERS`).

        Derived from ``repo.car`` on first use and cached beside it.
        """
        if order == "preorder":
            return self.car_path
        if order not in CAR_ORDERS:
            raise ValueError(f"unknown block order {order!r} (one of {', '.join(CAR_ORDERS)})")
        path = self.directory / f"repo-{order}.car"
        if not path.exists():
            _write_reordered(self, order, path)
        return path

    def car(self) -> bytes:
        return _read(self.car_path)

    def items(self) -> list[tuple[str, bytes]]:
        """Every (path, record CID bytes) of the base repository, sorted by path."""
        return _read_items(self.directory / "keys.txt", self.directory / "cids.bin")

    def new_items(self) -> list[tuple[str, bytes]]:
        """(path, record CID bytes) created by each event, in event order."""
        return _read_items(self.directory / "new_keys.txt", self.directory / "new_cids.bin")

    def node_blocks(self) -> list[tuple[bytes, bytes]]:
        """(CID bytes, data) of every MST node of the base tree, pre-order."""
        from atrepo.core.car import CarReader

        with open(self.directory / "nodes.car", "rb") as fh:
            return [(cid.raw, data) for cid, data, _ in CarReader(fh)]

    def public_key(self) -> bytes:
        """The 33-byte compressed secp256k1 public key that signed every commit."""
        from atrepo.core.keys import PrivateKey

        return PrivateKey.from_bytes("k256", signing_key_bytes()).public_key.compressed

    def frames(self) -> list[bytes]:
        """The ``#commit`` frames (header ‖ body), in sequence order."""
        from atrepo.core.events import iter_stream_frames

        with open(self.directory / "events.frames", "rb") as fh:
            return [bytes(frame) for _, frame in iter_stream_frames(fh)]


#: Block orders a fixture CAR can be written in. ``preorder`` is the streamable
#: order (``repo.car``). ``bfs`` is the order of the reference implementation's
#: export (``MST.writeToCarStream`` in @atproto/repo): the commit, the tree nodes
#: level by level from the root, then the records in the order that walk met
#: them. ``shuffled`` is the commit first and every other block in a seeded
#: random order (any order a store iterating by CID might produce).
CAR_ORDERS = ("preorder", "bfs", "shuffled")


def sizes(quick: bool) -> tuple[int, int]:
    """(records, events) for a full or a ``--quick`` run."""
    return (QUICK_RECORDS, QUICK_EVENTS) if quick else (FULL_RECORDS, FULL_EVENTS)


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _read_items(keys: Path, cids: Path) -> list[tuple[str, bytes]]:
    names = _read(keys).decode().split("\n") if keys.stat().st_size else []
    raw = _read(cids)
    if len(raw) != 36 * len(names):
        raise ValueError(f"{cids}: {len(raw)} bytes for {len(names)} keys")
    return [(name, raw[36 * i : 36 * i + 36]) for i, name in enumerate(names)]


@functools.cache
def load(records: int, events: int) -> RepoFixture:
    """The fixture for these parameters, built now if it is not cached yet."""
    directory = CACHE_ROOT / f"repo-v{FIXTURE_VERSION}-r{records}-e{events}"
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=CACHE_ROOT))
        try:
            _build(tmp, records, events)
            try:
                tmp.rename(directory)
            except OSError:  # another run finished first; theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    meta = json.loads(meta_path.read_text())
    return RepoFixture(
        directory=directory,
        records=records,
        events=events,
        did=meta["did"],
        did_key=meta["did_key"],
        commit=bytes.fromhex(meta["commit"]),
        data=bytes.fromhex(meta["data"]),
        rev=meta["rev"],
        final_data=bytes.fromhex(meta["final_data"]),
        final_rev=meta["final_rev"],
        car_bytes_size=meta["car_bytes"],
    )


# --- building -------------------------------------------------------------------------------------


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _iso(micros: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Maker:
    """Deterministic, real-shaped record values."""

    def __init__(self, rng: random.Random) -> None:
        from atrepo.core.cid import CID

        self.rng = rng
        self._cid = CID.for_dag_cbor
        self._tid_chars = "234567abcdefghijklmnopqrstuvwxyz"
        self.collections = [name for name, _ in _COLLECTIONS]
        self.weights = [weight for _, weight in _COLLECTIONS]

    def collection(self) -> str:
        return self.rng.choices(self.collections, self.weights)[0]

    def _other_did(self) -> str:
        return "did:plc:" + "".join(self.rng.choices(self._tid_chars, k=24))

    def _post_uri(self) -> str:
        from atrepo.core.tid import tid_from_parts

        micros = self.rng.randrange(_micros(_HISTORY_START), _micros(_HISTORY_END))
        return (
            f"at://{self._other_did()}/app.bsky.feed.post/{tid_from_parts(micros, self.rng.randrange(1024))}"
        )

    def _strong_ref(self) -> dict[str, str]:
        return {"uri": self._post_uri(), "cid": str(self._cid(self.rng.randbytes(24)))}

    def record(self, collection: str, micros: int) -> dict[str, Any]:
        created = _iso(micros)
        if collection == "app.bsky.feed.post":
            text = " ".join(self.rng.choices(_WORDS, k=self.rng.randrange(3, 40)))
            post: dict[str, Any] = {
                "$type": collection,
                "text": text[:300],
                "createdAt": created,
                "langs": ["en"],
            }
            if self.rng.random() < 0.25:
                post["reply"] = {"root": self._strong_ref(), "parent": self._strong_ref()}
            return post
        if collection == "app.bsky.feed.like":
            return {"$type": collection, "subject": self._strong_ref(), "createdAt": created}
        return {"$type": collection, "subject": self._other_did(), "createdAt": created}


def _write_items(directory: Path, stem: str, items: list[tuple[str, bytes]]) -> None:
    (directory / f"{stem}keys.txt").write_bytes("\n".join(k for k, _ in items).encode())
    (directory / f"{stem}cids.bin").write_bytes(b"".join(c for _, c in items))


def _reference_order(fx: RepoFixture) -> list[tuple[bytes, bytes]]:
    """Every block of ``repo.car`` as (CID bytes, data) in the reference export order."""
    from atrepo.core.blocks import BlockMap
    from atrepo.core.car import CarReader
    from atrepo.core.cid import CID
    from atrepo.core.mst import MST

    with open(fx.car_path, "rb") as fh:
        blocks = BlockMap((cid, data) for cid, data, _ in CarReader(fh))
    commit = CID(fx.commit)
    out = [(fx.commit, blocks.require(commit))]
    tree = MST.load(blocks, CID(fx.data))
    leaves: list[CID] = []
    top = tree.top()
    level = [] if top is None else [top]
    while level:
        below = []
        for pos in level:
            out.append((pos.node.cid.raw, blocks.require(pos.node.cid)))
            below.extend(tree.children(pos))
            leaves.extend(pos.node.vals)
        level = below
    seen: set[CID] = set()
    for cid in leaves:
        if cid not in seen:
            seen.add(cid)
            out.append((cid.raw, blocks.require(cid)))
    return out


def _write_reordered(fx: RepoFixture, order: str, path: Path) -> None:
    from atrepo.core.car import CarWriter
    from atrepo.core.cid import CID
    from atrepo.core.memory import collector_paused

    with collector_paused():
        blocks = _reference_order(fx)
        if order == "shuffled":
            rest = blocks[1:]
            random.Random(f"atrepo-bench-shuffle-{fx.records}").shuffle(rest)
            blocks = blocks[:1] + rest
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer = CarWriter(fh, [CID(fx.commit)])
                for raw, data in blocks:
                    writer.write_block(CID(raw), data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def _build(directory: Path, records: int, events: int) -> None:
    from atrepo.core import cbor
    from atrepo.core.blocks import BlockMap
    from atrepo.core.car import CarWriter
    from atrepo.core.cid import CID
    from atrepo.core.commit import sign_commit
    from atrepo.core.events import encode_frame, write_stream_frame
    from atrepo.core.keys import PrivateKey
    from atrepo.core.memory import collector_paused
    from atrepo.core.mst import MST
    from atrepo.core.repo import Repo, Write
    from atrepo.core.tid import tid_from_parts

    rng = random.Random(f"atrepo-bench-{FIXTURE_VERSION}-{records}-{events}")
    maker = _Maker(rng)
    key = PrivateKey.from_bytes("k256", signing_key_bytes())
    start, end = _micros(_HISTORY_START), _micros(_HISTORY_END)

    with collector_paused():
        # Base repository: `records` records spread over two years of history.
        stamps = sorted(rng.sample(range(start, end, 1000), records))
        blocks = BlockMap()
        items: list[tuple[str, CID]] = []
        for micros in stamps:
            collection = maker.collection()
            rkey = tid_from_parts(micros + rng.randrange(1000), rng.randrange(1024))
            data = cbor.encode(maker.record(collection, micros))
            cid = CID.for_dag_cbor(data)
            blocks.put(cid, data)
            items.append((f"{collection}/{rkey}", cid))
        items.sort()
        tree = MST.build(items)
        nodes = tree.new_blocks()
        blocks.update(nodes)
        rev = tid_from_parts(end, 0)
        commit = sign_commit(DID, tree.root_cid, rev, key)
        blocks.put(commit.cid, commit.raw)
        repo = Repo.open(blocks, commit.cid)

        with open(directory / "repo.car", "wb") as fh:
            writer = CarWriter(fh, [commit.cid])
            for cid, data in repo.export_blocks():
                writer.write_block(cid, data)
            car_size = writer.bytes_written
        with open(directory / "nodes.car", "wb") as fh:
            writer = CarWriter(fh, [tree.root_cid])
            for cid, _node, _layer in tree.nodes():
                writer.write_block(cid, nodes.require(cid))
        _write_items(directory, "", [(k, c.raw) for k, c in items])

        # Firehose: one create per commit, a second apart, after the history.
        new_items: list[tuple[str, bytes]] = []
        with open(directory / "events.frames", "wb") as fh:
            for i in range(1, events + 1):
                micros = end + i * 1_000_000
                collection = maker.collection()
                rkey = tid_from_parts(micros - rng.randrange(1, 500_000), rng.randrange(1024))
                record = maker.record(collection, micros)
                result = repo.apply_writes(
                    [Write("create", collection, rkey, record)], key, rev=tid_from_parts(micros, 0)
                )
                write_stream_frame(fh, encode_frame(result.to_event(seq=i, time=_iso(micros + 20_000))))
                (op,) = result.ops
                assert op.cid is not None
                new_items.append((op.path, op.cid.raw))
                repo = result.repo
        _write_items(directory, "new_", new_items)

    meta = {
        "version": FIXTURE_VERSION,
        "records": records,
        "events": events,
        "did": DID,
        "did_key": key.public_key.did_key(),
        "commit": commit.cid.raw.hex(),
        "data": commit.data.raw.hex(),
        "rev": rev,
        "final_data": repo.data.raw.hex(),
        "final_rev": repo.rev,
        "car_bytes": car_size,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
