"""Full verification of a repository CAR (issue 3, benchmark 3): records/s and peak RSS.

One operation is one record of a full verification: every block hash-checked,
the commit decoded and its secp256k1 signature verified, the MST walked from
the commit's ``data`` with every record block required, counting the records.
Each sample verifies the whole 100k-record CAR (35 MB, streamable pre-order),
held in memory (a ``BytesIO`` for stream readers, the bytes for the others).

Only atrepo verifies repositories as such; the peers are composed from their
parts (see each contender's note and ``bench/README.md``). Every sample checks
the record count. After timing, each implementation verifies the CAR once more
in a fresh process, reading the file as its API allows (atrepo and atmst
stream from the open file, the others need the whole CAR as bytes), and its
peak RSS (VmHWM) is reported raw, beside that of a process that only imported
the library.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from bench import repo_fixtures
from bench.harness import (
    Case,
    Contender,
    Runner,
    Target,
    active_config,
    expect,
    measure_in_child,
    peak_rss_bytes,
    register,
)

MiB = 1 << 20

# --- shared peer helpers (also used by cases_sync) -----------------------------------------------------


def coincurve_verifier(compressed_key: bytes) -> Callable[[bytes, bytes], bool]:
    """``verify(message, compact_sig)`` with libsecp256k1 via coincurve, for peers without crypto.

    libsecp256k1 accepts only low-S signatures, as atproto requires.
    """
    import coincurve
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    key = coincurve.PublicKey(compressed_key)

    def verify(message: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            der = cdata_to_der(deserialize_compact(sig))
        except ValueError:
            return False
        return bool(key.verify(der, message))

    return verify


def atproto_verifier(did_key: str) -> Callable[[bytes, bytes], bool]:
    """``verify(message, compact_sig)`` with the SDK's algorithm class, key parsed once."""
    from atproto_crypto.algs import ALGORITHM_TO_CLASS
    from atproto_crypto.did import parse_did_key

    multikey = parse_did_key(did_key)
    alg_verify = ALGORITHM_TO_CLASS[multikey.jwt_alg]().verify_signature
    key_bytes = multikey.key_bytes
    return lambda message, sig: bool(alg_verify(key_bytes, message, sig))


def check_commit_dict(commit: Any, did: str | None = None) -> None:
    """Shape checks a careful composer adds: version 3, the expected DID, a 64-byte sig."""
    expect(isinstance(commit, dict) and commit.get("version") == 3, "commit is not a version-3 map")
    expect(did is None or commit.get("did") == did, "commit is for another DID")
    expect(isinstance(commit.get("sig"), bytes) and len(commit["sig"]) == 64, "commit sig is not 64 bytes")


def libipld_hash_check(blocks: dict[Any, Any]) -> None:
    """SDK blocks are decoded values only: re-encode each and compare its SHA-256 with its CID."""
    import libipld

    encode = libipld.encode_dag_cbor
    sha256 = hashlib.sha256
    for cid, value in blocks.items():
        multihash = cid.hash
        expect(cid.codec == 0x71 and multihash.code == 0x12, "block CID is not dag-cbor sha-256")
        expect(sha256(encode(value)).digest() == multihash.digest, "block does not hash to its CID")


def sdk_walk(blocks: dict[Any, Any], root: bytes, cid_type: Callable[[bytes], Any]) -> int:
    """Walk decoded MST nodes in key order (the SDK has no MST); count records, require their blocks.

    Keys are rebuilt from the prefix-compressed entries and must ascend; a
    missing node raises ``KeyError``.
    """
    count = 0
    last = b""

    def visit(link: bytes) -> None:
        nonlocal count, last
        node = blocks[cid_type(link)]
        if node["l"] is not None:
            visit(node["l"])
        previous = b""
        for entry in node["e"]:
            key = previous[: entry["p"]] + entry["k"]
            expect(key > last, "MST keys are not in ascending order")
            expect(cid_type(entry["v"]) in blocks, "record block is missing")
            count += 1
            previous = last = key
            if entry["t"] is not None:
                visit(entry["t"])

    visit(root)
    return count


# --- contenders ---------------------------------------------------------------------------------------


def verify_atrepo(stream: BinaryIO, did_key: str) -> int:
    """atrepo's one call: ``verify_repo_car`` (streams; O(height) memory in pre-order)."""
    from atrepo.core.keys import parse_did_key
    from atrepo.core.verify import RepoSummary, verify_repo_car

    summary = RepoSummary()
    count = sum(1 for _ in verify_repo_car(stream, key=parse_did_key(did_key), summary=summary))
    expect(summary.streamed and summary.records == count, "atrepo did not stream the CAR")
    return count


def verify_atmst(stream: BinaryIO, key: bytes) -> int:
    """atmst: its CAR block store (indexes offsets, hash-checks each block read), commit
    decoded with cbrrr, signature by coincurve, NodeWalker.iter_kv for the records."""
    import cbrrr
    from atmst.blockstore.car_file import ReadOnlyCARBlockStore
    from atmst.mst.node_store import NodeStore
    from atmst.mst.node_walker import NodeWalker

    store = ReadOnlyCARBlockStore(stream)
    commit = cbrrr.decode_dag_cbor(store.get_block(bytes(store.car_root)))
    check_commit_dict(commit)
    sig = commit.pop("sig")
    expect(coincurve_verifier(key)(cbrrr.encode_dag_cbor(commit), sig), "bad commit signature")
    get_block = store.get_block
    count = 0
    for _path, cid in NodeWalker(NodeStore(store), commit["data"]).iter_kv():
        get_block(bytes(cid))  # the record must be there and hash to its CID
        count += 1
    return count


def verify_atproto(car: bytes, did_key: str) -> int:
    """atproto: ``CAR.from_bytes`` (libipld; no hash check, so blocks are re-encoded and
    hashed), commit signature with atproto_crypto, a walk over the decoded nodes."""
    import libipld
    from atproto_core.car import CAR
    from atproto_core.cid import CID

    parsed = CAR.from_bytes(car)
    blocks = parsed.blocks
    libipld_hash_check(blocks)
    commit = dict(blocks[parsed.root])
    check_commit_dict(commit)
    sig = commit.pop("sig")
    expect(atproto_verifier(did_key)(libipld.encode_dag_cbor(commit), sig), "bad commit signature")
    return sdk_walk(blocks, commit["data"], CID.from_decoded_bytes)


def verify_arroba(car: bytes, did_key: str) -> int:
    """arroba: carbox ``read_car`` (hash-checks), blocks into ``MemoryStorage`` as its
    importRepo does, ``util.verify_sig`` on the commit, ``MST.walk`` for the records."""
    from arroba.did import decode_did_key
    from arroba.mst import MST, Leaf
    from arroba.storage import Block, MemoryStorage
    from arroba.util import verify_sig
    from carbox import read_car

    roots, car_blocks = read_car(car)
    storage = MemoryStorage()
    storage.write_blocks([Block(cid=b.cid, encoded=b.data, seq=0) for b in car_blocks])
    head = storage.read(roots[0])
    expect(head is not None, "commit block is missing")
    commit = head.decoded
    check_commit_dict(commit)
    expect(verify_sig(commit, decode_did_key(did_key)), "bad commit signature")
    has = storage.has
    count = 0
    for entry in MST.load(storage=storage, cid=commit["data"]).walk():
        if isinstance(entry, Leaf):
            expect(has(entry.value), "record block is missing")
            count += 1
    return count


# --- runners and child processes ----------------------------------------------------------------------


def _events_for(records: int) -> int:
    """Events of the fixture with ``records`` records (smaller CARs for slow peers have none)."""
    full_records, events = repo_fixtures.sizes(active_config().quick)
    return events if records == full_records else 0


@functools.cache
def _fixture(records: int) -> repo_fixtures.RepoFixture:
    return repo_fixtures.load(records, _events_for(records))


def _verifier(impl: str, fx: repo_fixtures.RepoFixture) -> tuple[Callable[[Any], int], bool]:
    """(verify(source), wants_stream) for ``impl``."""
    if impl == "atrepo":
        return functools.partial(_call, verify_atrepo, fx.did_key), True
    if impl == "atmst":
        return functools.partial(_call, verify_atmst, fx.public_key()), True
    if impl == "atproto":
        return functools.partial(_call, verify_atproto, fx.did_key), False
    if impl == "arroba":
        return functools.partial(_call, verify_arroba, fx.did_key), False
    raise ValueError(f"unknown implementation {impl!r}")


def _call(fn: Callable[[Any, Any], int], key: Any, source: Any) -> int:
    return fn(source, key)


def _setup(impl: str, records: int) -> Runner:
    fx = _fixture(records)
    car = fx.car()
    verify, streams = _verifier(impl, fx)

    def run(n: int) -> None:
        count = verify(io.BytesIO(car) if streams else car)
        expect(count == fx.records, f"verified {count} records, the CAR holds {fx.records}")

    return run


_IMPORTS = {
    "atrepo": ("atrepo.core.verify", "atrepo.core.keys"),
    "atmst": ("atmst.blockstore.car_file", "atmst.mst.node_walker", "cbrrr", "coincurve"),
    "atproto": ("atproto_core.car", "atproto_crypto.verify", "libipld"),
    "arroba": ("arroba.mst", "arroba.storage", "arroba.util", "arroba.did", "carbox"),
}


def child_import_only(impl: str) -> dict[str, float]:
    """Import what ``impl``'s verification imports, nothing else; the peak RSS that leaves."""
    import importlib

    for module in _IMPORTS[impl]:
        importlib.import_module(module)
    return {"import_rss_bytes": float(peak_rss_bytes())}


def child_verify(impl: str, records: str, events: str) -> dict[str, float]:
    """Child process body: verify the fixture CAR once, reading the file as ``impl``'s API allows.

    The baseline (peak RSS after the imports) is read in this same process, so
    it is never above the final peak: two separate interpreters differ by tens
    of KiB, more than a tiny quick-mode fixture adds.
    """
    base = child_import_only(impl)
    fx = repo_fixtures.load(int(records), int(events))
    verify, streams = _verifier(impl, fx)
    with open(fx.car_path, "rb") as fh:
        count = verify(fh) if streams else verify(fh.read())
    expect(count == fx.records, f"verified {count} records, the CAR holds {fx.records}")
    return {"records": count, **base}


def _probe(impl: str, records: int) -> Callable[[], dict[str, float]]:
    def probe() -> dict[str, float]:
        fx = _fixture(records)  # built and cached before the child reads it
        peak = measure_in_child(__name__, "child_verify", impl, str(fx.records), str(fx.events))
        return {"peak_rss_bytes": peak["peak_rss_bytes"], "baseline_rss_bytes": peak["import_rss_bytes"]}

    return probe


#: Record count of the CAR a peer verifies; smaller than the fixture only where
#: a whole run would take more than about a minute.
PEER_RECORDS: dict[str, int] = {"arroba": 10_000}  # ~900 records/s: 100k would take ~2 min a run

_NOTES = {
    "atrepo": "verify_repo_car (streaming, all checks)",
    "atmst": "composed: ReadOnlyCARBlockStore + NodeWalker.iter_kv + coincurve signature check",
    "atproto": "composed: CAR.from_bytes + re-encode/hash check + atproto_crypto + a walk written here "
    "(no MST; no layer checks)",
    "arroba": "composed: carbox read_car + MemoryStorage + util.verify_sig + MST.walk",
}
_LABELS = {
    "atrepo": "atrepo verify_repo_car",
    "atmst": "atmst (composed)",
    "atproto": "atproto (composed)",
    "arroba": "arroba (composed)",
}
_NEEDS = {
    "atrepo": ("atrepo",),
    "atmst": ("atmst", "cbrrr", "coincurve"),
    "atproto": ("atproto_core", "atproto_crypto", "libipld"),
    "arroba": ("arroba", "carbox", "dag_cbor", "multiformats"),
}


@register("car", "Full repository CAR verification (records/s, peak RSS)", order=40)
def build() -> list[Case]:
    """One case: verify the fixture's full-repository CAR."""
    records, _ = repo_fixtures.sizes(active_config().quick)
    contenders = []
    for impl in ("atrepo", "atmst", "atproto", "arroba"):
        size = min(records, PEER_RECORDS.get(impl, records))
        note = _NOTES[impl] + (f"; on a {size:,}-record CAR" if size != records else "")
        contenders.append(
            Contender(
                impl,
                _LABELS[impl],
                functools.partial(_setup, impl, size),
                _NEEDS[impl],
                note=note,
                ops=size,
                probe=_probe(impl, size),
            )
        )
    return [
        Case(
            f"verify {records:,}-record CAR (records/s)",
            f"hash-check, signature-check and walk a {records:,}-record repository CAR",
            tuple(contenders),
            target=Target(200_000, "records/s", max_peak_rss_bytes=64 * MiB),
            max_reps=3,
        )
    ]
