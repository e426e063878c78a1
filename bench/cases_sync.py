"""Sync 1.1 validation of ``#commit`` events (issue 3, benchmark 4): events/s, secp256k1.

The fixture's 1,000 single-create ``#commit`` frames (each with ``prevData``)
are validated in order, as a relay does per event: decode the frame, parse the
CAR slice (every block hash-checked), check the commit against the message
(repo, rev, commit CID), verify the signature, check the op is well formed and
that the new tree maps its path to its CID with the record block present,
invert the op on the partial tree and compare the recomputed root with
``prevData``, then chain-check against the stored ``(rev, data)`` of the repo
and store the new state. Each sample starts from the state before event 1 and
checks it ends at the last commit's ``(rev, data)``; setup also checks that a
tampered event (its op pointing at another record) is rejected.

atrepo: ``decode_frame`` + ``validate_commit`` + ``check_chain``/``state_after``.
atmst and arroba have no firehose validation (atmst 0.0.6 has no
inductive-firehose module), so theirs is composed from their CAR reader, codec
and MST operations. The MarshalX SDK parses frames and CARs but has no MST, so
its row does only the checks that need no tree, and says so: it is not the same
work.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable
from typing import Any

from bench import repo_fixtures
from bench.cases_car import atproto_verifier, check_commit_dict, coincurve_verifier, libipld_hash_check
from bench.harness import Case, Contender, Runner, Target, active_config, expect, register

MAX_BLOCKS_BYTES = 2_000_000
MAX_OPS = 200

#: ``validate(frame, state)`` returns the next state: what a consumer stores per repository.
Validate = Callable[[bytes, Any], Any]
#: A contender's validator, its state before event 1, and the data CID bytes of a state.
Contestant = tuple[Validate, Any, Callable[[Any], bytes]]


@functools.cache
def _fixture(quick: bool) -> repo_fixtures.RepoFixture:
    return repo_fixtures.load(*repo_fixtures.sizes(quick))


@functools.cache
def _tampered(quick: bool) -> bytes:
    """Event 1 with its op's CID swapped for event 2's record CID (signature still valid)."""
    from atrepo.core.events import decode_frame, encode_frame

    frames = _fixture(quick).frames()
    first, second = decode_frame(frames[0]), decode_frame(frames[1])
    op = dataclasses.replace(first.ops[0], cid=second.ops[0].cid)  # type: ignore[union-attr]
    return encode_frame(dataclasses.replace(first, ops=(op,)))  # type: ignore[type-var]


def _check_ops(ops: list[Any], get: Callable[[Any, str], Any]) -> None:
    """Op well-formedness (spec §7 step 6), on dicts or models via ``get``."""
    seen: set[str] = set()
    for op in ops:
        action, path, cid, prev = get(op, "action"), get(op, "path"), get(op, "cid"), get(op, "prev")
        expect(path not in seen, "a path appears twice")
        seen.add(path)
        if action == "create":
            expect(cid is not None and prev is None, "create must have cid and no prev")
        elif action == "update":
            expect(cid is not None and prev is not None, "update must have cid and prev")
        elif action == "delete":
            expect(cid is None and prev is not None, "delete must have prev and no cid")
        else:
            raise AssertionError(f"unknown action {action!r}")


def _dict_get(op: dict[str, Any], name: str) -> Any:
    return op.get(name)


# --- contenders: validate one frame against the stored state --------------------------------------------


def _atrepo(fx: repo_fixtures.RepoFixture) -> Contestant:
    from atrepo.core.cid import CID
    from atrepo.core.events import decode_frame
    from atrepo.core.keys import parse_did_key
    from atrepo.core.validate import Chain, RepoState, check_chain, state_after, validate_commit

    key = parse_did_key(fx.did_key)

    def validate(frame: bytes, state: Any) -> Any:
        verified = validate_commit(decode_frame(frame), key)  # type: ignore[arg-type]
        expect(check_chain(state, verified) is Chain.NEXT, "event does not follow the stored state")
        return state_after(verified)

    return validate, RepoState(fx.rev, CID(fx.data), CID(fx.commit)), lambda state: state.data.raw


def _atmst(fx: repo_fixtures.RepoFixture) -> Contestant:
    import cbrrr
    from atmst.blockstore import MemoryBlockStore, OverlayBlockStore
    from atmst.blockstore.car_file import ReadOnlyCARBlockStore
    from atmst.mst.node_store import NodeStore
    from atmst.mst.node_walker import NodeWalker
    from atmst.mst.node_wrangler import NodeWrangler

    decode_multi = cbrrr.decode_multi_dag_cbor_in_violation_of_the_spec
    decode, encode = cbrrr.decode_dag_cbor, cbrrr.encode_dag_cbor
    verify = coincurve_verifier(fx.public_key())

    def validate(frame: bytes, state: Any) -> Any:
        header, body = decode_multi(frame)
        expect(header.get("op") == 1 and header.get("t") == "#commit", "not a #commit frame")
        expect(not body["tooBig"] and not body["rebase"], "tooBig/rebase set")
        ops, blocks = body["ops"], body["blocks"]
        expect(len(ops) <= MAX_OPS and 0 < len(blocks) <= MAX_BLOCKS_BYTES, "size limits")
        car = ReadOnlyCARBlockStore(io.BytesIO(blocks))  # hashes are checked on every read
        expect(car.car_root == body["commit"], "CAR root is not the message's commit")
        commit = decode(car.get_block(bytes(car.car_root)))
        check_commit_dict(commit, body["repo"])
        expect(commit["rev"] == body["rev"] and body["rev"] > state[0], "rev mismatch or not after stored")
        sig = commit.pop("sig")
        expect(verify(encode(commit), sig), "bad commit signature")
        _check_ops(ops, _dict_get)
        store = NodeStore(OverlayBlockStore(MemoryBlockStore(), car))
        data = commit["data"]
        for op in ops:  # forward: the new tree holds what the op says
            expect(NodeWalker(store, data).find_rpath(op["path"]) == op["cid"], "op not in the new tree")
            if op["cid"] is not None:
                car.get_block(bytes(op["cid"]))
        wrangler = NodeWrangler(store)
        root = data
        for op in ops:  # inversion
            if op["action"] == "create":
                root = wrangler.del_record(root, op["path"])
            else:
                root = wrangler.put_record(root, op["path"], op["prev"])
        expect(root == body["prevData"], "inverted root is not prevData")
        expect(body["since"] == state[0] and body["prevData"] == state[1], "chain broken")
        return body["rev"], data

    return validate, (fx.rev, cbrrr.CID(fx.data)), lambda state: bytes(state[1])


def _arroba(fx: repo_fixtures.RepoFixture) -> Contestant:
    import dag_cbor
    from arroba.did import decode_did_key
    from arroba.mst import MST
    from arroba.storage import Block, MemoryStorage
    from arroba.util import verify_sig
    from carbox import read_car
    from multiformats import CID

    public_key = decode_did_key(fx.did_key)

    def validate(frame: bytes, state: Any) -> Any:
        stream = io.BytesIO(frame)
        header = dag_cbor.decode(stream, allow_concat=True)
        body = dag_cbor.decode(stream)
        expect(header.get("op") == 1 and header.get("t") == "#commit", "not a #commit frame")
        expect(not body["tooBig"] and not body["rebase"], "tooBig/rebase set")
        ops, blocks = body["ops"], body["blocks"]
        expect(len(ops) <= MAX_OPS and 0 < len(blocks) <= MAX_BLOCKS_BYTES, "size limits")
        roots, car_blocks = read_car(blocks)  # hash-checks every block
        expect(roots[0] == body["commit"], "CAR root is not the message's commit")
        storage = MemoryStorage()
        storage.write_blocks([Block(cid=b.cid, encoded=b.data) for b in car_blocks])
        head = storage.read(roots[0])
        expect(head is not None, "commit block is missing")
        commit = head.decoded
        check_commit_dict(commit, body["repo"])
        expect(commit["rev"] == body["rev"] and body["rev"] > state[0], "rev mismatch or not after stored")
        expect(verify_sig(commit, public_key), "bad commit signature")
        _check_ops(ops, _dict_get)
        tree = MST.load(storage=storage, cid=commit["data"])
        for op in ops:  # forward
            expect(tree.get(op["path"]) == op["cid"], "op not in the new tree")
            expect(op["cid"] is None or storage.has(op["cid"]), "record block is missing")
        for op in ops:  # inversion
            if op["action"] == "create":
                tree = tree.delete(op["path"])
            elif op["action"] == "update":
                tree = tree.update(op["path"], op["prev"])
            else:
                tree = tree.add(op["path"], op["prev"])
        expect(tree.get_pointer() == body["prevData"], "inverted root is not prevData")
        expect(body["since"] == state[0] and body["prevData"] == state[1], "chain broken")
        return body["rev"], commit["data"]

    return validate, (fx.rev, CID.decode(fx.data)), lambda state: bytes(state[1])


def _atproto(fx: repo_fixtures.RepoFixture) -> Contestant:
    import libipld
    from atproto_client import models
    from atproto_core.car import CAR
    from atproto_core.cid import CID
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import Frame, MessageFrame

    verify = atproto_verifier(fx.did_key)
    commit_model = models.ComAtprotoSyncSubscribeRepos.Commit

    def validate(frame: bytes, state: Any) -> Any:
        parsed = Frame.from_bytes(frame)
        expect(isinstance(parsed, MessageFrame), "not a message frame")
        msg = parse_subscribe_repos_message(parsed)  # type: ignore[arg-type]
        expect(isinstance(msg, commit_model), "not a #commit")
        expect(not msg.too_big and not msg.rebase, "tooBig/rebase set")
        expect(len(msg.ops) <= MAX_OPS and 0 < len(msg.blocks) <= MAX_BLOCKS_BYTES, "size limits")
        car = CAR.from_bytes(msg.blocks)
        libipld_hash_check(car.blocks)
        expect(car.root == msg.commit, "CAR root is not the message's commit")
        commit = dict(car.blocks[car.root])
        check_commit_dict(commit, msg.repo)
        expect(commit["rev"] == msg.rev and msg.rev > state[0], "rev mismatch or not after stored")
        sig = commit.pop("sig")
        expect(verify(libipld.encode_dag_cbor(commit), sig), "bad commit signature")
        _check_ops(msg.ops, getattr)
        for op in msg.ops:
            expect(op.cid is None or op.cid in car.blocks, "record block is missing")
        expect(msg.since == state[0] and msg.prev_data == state[1], "chain broken")
        return msg.rev, CID.from_decoded_bytes(commit["data"]), commit["data"]

    return validate, (fx.rev, CID.from_decoded_bytes(fx.data), fx.data), lambda state: state[2]


# --- runners -----------------------------------------------------------------------------------------


def _setup(make: Callable[[repo_fixtures.RepoFixture], Contestant], quick: bool, tamper: bool) -> Runner:
    fx = _fixture(quick)
    frames = fx.frames()
    validate, start, data_of = make(fx)
    if tamper:
        try:
            validate(_tampered(quick), start)
        except Exception:
            pass
        else:
            raise AssertionError("accepted an event whose op points at another record")

    def run(n: int) -> None:
        state = start
        for frame in frames[:n]:
            state = validate(frame, state)
        if n == len(frames):
            expect(data_of(state) == fx.final_data, "did not end at the last commit's data")

    return run


#: Events a peer validates per sample, where fewer than the fixture's. arroba
#: manages 30-55 events/s (carbox and multiformats type-check every CID at run
#: time), so 1,000 events would take 20-35 s a sample, one to two minutes for
#: the case; every event is the same kind of work, so a prefix gives the same rate.
PEER_EVENTS: dict[str, int] = {"arroba": 250}


@register("sync", "Sync 1.1 validation of #commit events (events/s)", order=50)
def build() -> list[Case]:
    """One case: validate the fixture's single-op ``#commit`` stream."""
    quick = active_config().quick
    records, events = repo_fixtures.sizes(quick)

    def contender(
        impl: str, label: str, make: Any, needs: tuple[str, ...], note: str, tamper: bool = True
    ) -> Contender:
        count = min(events, PEER_EVENTS.get(impl, events))
        if count != events:
            note += f"; first {count:,} events"
        return Contender(
            impl, label, functools.partial(_setup, make, quick, tamper), needs, note=note, ops=count
        )

    return [
        Case(
            f"validate {events:,} #commit on {records:,} (events/s)",
            f"Sync 1.1 validation of {events:,} single-create #commit frames in order (k256)",
            (
                contender(
                    "atrepo",
                    "atrepo validate_commit",
                    _atrepo,
                    ("atrepo",),
                    "decode_frame + validate_commit + check_chain/state_after",
                ),
                contender(
                    "atmst",
                    "atmst (composed)",
                    _atmst,
                    ("atmst", "cbrrr", "coincurve"),
                    "composed: cbrrr frame decode, ReadOnlyCARBlockStore, coincurve signature, "
                    "NodeWalker.find_rpath, NodeWrangler.del_record inversion",
                ),
                contender(
                    "arroba",
                    "arroba (composed)",
                    _arroba,
                    ("arroba", "carbox", "dag_cbor", "multiformats"),
                    "composed: dag_cbor frame decode, carbox read_car, MemoryStorage, util.verify_sig, "
                    "MST.get forward check, MST.delete inversion",
                ),
                contender(
                    "atproto",
                    "atproto (no MST: partial)",
                    _atproto,
                    ("atproto_client", "atproto_core", "atproto_crypto", "atproto_firehose", "libipld"),
                    "LESS WORK: Frame.from_bytes + parse_subscribe_repos_message + CAR.from_bytes "
                    "+ hash check + signature + chain; no forward/inversion check (no MST)",
                    tamper=False,
                ),
            ),
            target=Target(10_000, "events/s"),
            max_reps=3,
        )
    ]
