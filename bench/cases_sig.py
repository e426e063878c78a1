"""ECDSA signature verification on P-256 and secp256k1 (verifies/s).

Two kinds of case per curve:

* ``verify <curve> (200 B msg)``: a 64-byte compact low-S signature over
  SHA-256 of a 200-byte message. Each operation takes the next (message,
  signature) pair from a pool of 256, so no signature is verified twice in a
  row. The public key is parsed once from its did:key, as a consumer caches it
  (except in the row that uses the SDK's one-call API, which takes the
  did:key string and parses it on every call).
* ``verify commit <curve>``: a decoded signed repo commit (each
  implementation's native value, from its own decoder, made before timing):
  re-encode it without ``sig`` to DAG-CBOR and verify ``sig`` over those
  bytes. This is the only verification arroba offers (``arroba.util.verify_sig``).

All signatures are made by atrepo; setup checks that every contender accepts
the whole pool and rejects a tampered message.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.harness import Case, Contender, Runner, call_cycle, expect, register

POOL = 256
MESSAGE_BYTES = 200
_CURVES = (("p256", "P-256"), ("k256", "secp256k1"))
_NO_RAW_ARROBA = "no raw-bytes verify API; arroba.util.verify_sig takes a commit object (see verify commit)"
_NO_SIG_ATMST = "atmst has no signature verification"


def _pairs(curve: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """did:key and a pool of (message, signature) pairs made with atrepo."""
    from atrepo.core.keys import PrivateKey

    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    rng = random.Random(f"sig-{curve}")
    pairs = []
    for _ in range(POOL):
        msg = rng.randbytes(MESSAGE_BYTES)
        pairs.append((msg, key.sign(msg)))
    return key.public_key.did_key(), pairs


def _commits(curve: str) -> tuple[str, list[bytes]]:
    """did:key and a pool of signed commits (DAG-CBOR bytes) made with atrepo."""
    from atrepo.core import cbor
    from atrepo.core.cid import CID
    from atrepo.core.keys import PrivateKey

    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    blocks = []
    for i in range(POOL):
        unsigned = {
            "did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "version": 3,
            "data": CID.for_dag_cbor(cbor.encode({"root": i})),
            "rev": f"3kz7n4ujdw{i:03d}",
            "prev": None,
        }
        blocks.append(cbor.encode({**unsigned, "sig": key.sign(cbor.encode(unsigned))}))
    return key.public_key.did_key(), blocks


Verify = Callable[[bytes, bytes], bool]


def _check_pairs(verify: Verify, pairs: list[tuple[bytes, bytes]]) -> None:
    expect(all(verify(m, s) for m, s in pairs), "rejects a valid signature from the pool")
    msg, sig = pairs[0]
    expect(not verify(msg + b"!", sig), "accepts a signature over a different message")


def _raw_atrepo(did: str, pairs: list[tuple[bytes, bytes]]) -> Runner:
    from atrepo.core.keys import parse_did_key

    verify = parse_did_key(did).verify
    _check_pairs(verify, pairs)
    return call_cycle(verify, pairs)


def _raw_atproto_did(did: str, pairs: list[tuple[bytes, bytes]]) -> Runner:
    from atproto_crypto.verify import verify_signature

    _check_pairs(lambda m, s: verify_signature(did, m, s), pairs)
    return call_cycle(verify_signature, [(did, m, s) for m, s in pairs])


def _raw_atproto_parsed(did: str, pairs: list[tuple[bytes, bytes]]) -> Runner:
    from atproto_crypto.algs import ALGORITHM_TO_CLASS
    from atproto_crypto.did import parse_did_key

    multikey = parse_did_key(did)
    verify = ALGORITHM_TO_CLASS[multikey.jwt_alg]().verify_signature
    key_bytes = multikey.key_bytes
    _check_pairs(lambda m, s: verify(key_bytes, m, s), pairs)
    return call_cycle(verify, [(key_bytes, m, s) for m, s in pairs])


CommitVerify = Callable[[Any], bool]


def _commit_runner(decode: Callable[[bytes], Any], verify: CommitVerify, blocks: list[bytes]) -> Runner:
    commits = [decode(b) for b in blocks]
    expect(all(verify(c) for c in commits), "rejects a valid signed commit from the pool")
    tampered = dict(commits[0])
    tampered["rev"] = "3kz7n4ujdwzzz"
    expect(not verify(tampered), "accepts a commit whose fields were changed after signing")
    return call_cycle(verify, [(c,) for c in commits])


def _commit_atrepo(did: str, blocks: list[bytes]) -> Runner:
    from atrepo.core import cbor
    from atrepo.core.keys import parse_did_key

    pub_verify = parse_did_key(did).verify
    encode = cbor.encode

    def verify(commit: dict[str, Any]) -> bool:
        return pub_verify(encode({k: v for k, v in commit.items() if k != "sig"}), commit["sig"])

    return _commit_runner(cbor.decode, verify, blocks)


def _commit_atproto(did: str, blocks: list[bytes]) -> Runner:
    import libipld
    from atproto_core.cbor import decode_dag
    from atproto_crypto.algs import ALGORITHM_TO_CLASS
    from atproto_crypto.did import parse_did_key

    multikey = parse_did_key(did)
    alg_verify = ALGORITHM_TO_CLASS[multikey.jwt_alg]().verify_signature
    key_bytes = multikey.key_bytes
    encode = libipld.encode_dag_cbor

    def verify(commit: dict[str, Any]) -> bool:
        return bool(
            alg_verify(key_bytes, encode({k: v for k, v in commit.items() if k != "sig"}), commit["sig"])
        )

    return _commit_runner(decode_dag, verify, blocks)


def _commit_arroba(did: str, blocks: list[bytes]) -> Runner:
    import dag_cbor
    from arroba.did import decode_did_key
    from arroba.util import verify_sig

    public_key = decode_did_key(did)

    def verify(commit: dict[str, Any]) -> bool:
        return bool(verify_sig(commit, public_key))

    return _commit_runner(dag_cbor.decode, verify, blocks)


def _lazy(fn: Callable[[str, Any], Runner], make: Callable[[], tuple[str, Any]]) -> Callable[[], Runner]:
    """Setup that builds the shared pool on first use, then the contender's runner."""

    def setup() -> Runner:
        did, pool = make()
        return fn(did, pool)

    return setup


def _cached(make: Callable[[], tuple[str, Any]]) -> Callable[[], tuple[str, Any]]:
    box: list[tuple[str, Any]] = []

    def get() -> tuple[str, Any]:
        if not box:
            box.append(make())
        return box[0]

    return get


@register("sig", "ECDSA signature verification (verifies/s)", order=20)
def build() -> list[Case]:
    """Raw-message and signed-commit verification cases for both curves."""
    cases: list[Case] = []
    for curve, curve_name in _CURVES:
        pairs = _cached(partial(_pairs, curve))
        cases.append(
            Case(
                f"verify {curve} ({MESSAGE_BYTES} B msg)",
                f"verify one 64-byte {curve_name} signature over a {MESSAGE_BYTES}-byte message",
                (
                    Contender("atrepo", "atrepo", _lazy(_raw_atrepo, pairs), needs=("atrepo",)),
                    Contender(
                        "atproto",
                        "atproto verify_signature(did)",
                        _lazy(_raw_atproto_did, pairs),
                        needs=("atproto_crypto",),
                    ),
                    Contender(
                        "atproto",
                        "atproto (key pre-parsed)",
                        _lazy(_raw_atproto_parsed, pairs),
                        needs=("atproto_crypto",),
                    ),
                    Contender("arroba", "arroba", unsupported=_NO_RAW_ARROBA),
                    Contender("atmst", "atmst", unsupported=_NO_SIG_ATMST),
                ),
            )
        )
    for curve, curve_name in _CURVES:
        commits = _cached(partial(_commits, curve))
        cases.append(
            Case(
                f"verify commit {curve}",
                f"re-encode a decoded signed commit without sig and verify its {curve_name} signature",
                (
                    Contender("atrepo", "atrepo", _lazy(_commit_atrepo, commits), needs=("atrepo",)),
                    Contender(
                        "atproto",
                        "atproto (libipld + crypto)",
                        _lazy(_commit_atproto, commits),
                        needs=("atproto_crypto", "atproto_core", "libipld"),
                    ),
                    Contender(
                        "arroba",
                        "arroba util.verify_sig",
                        _lazy(_commit_arroba, commits),
                        needs=("arroba", "dag_cbor"),
                    ),
                    Contender("atmst", "atmst", unsupported=_NO_SIG_ATMST),
                ),
            )
        )
    return cases
