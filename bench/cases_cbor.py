"""DAG-CBOR decode and encode of three real-shaped repository objects.

Every implementation gets the same bytes (made by atrepo's encoder). Decode
turns those bytes into the implementation's native value; encode turns the
implementation's own native value (its decode of the same bytes, made before
timing) back into bytes. Setup checks that each encoder reproduces the bytes
exactly, so every contender does the same, complete round trip.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from bench.harness import Case, Contender, Runner, call_repeat, expect, register

_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def _tid(n: int) -> str:
    """A 13-character TID-shaped record key for the integer ``n``."""
    chars = []
    for _ in range(13):
        chars.append(_TID_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def sample_objects() -> dict[str, bytes]:
    """name -> DAG-CBOR bytes of an MST node, a post record and a signed commit."""
    from atrepo.core import cbor
    from atrepo.core.cid import CID
    from atrepo.core.keys import PrivateKey

    def link(seed: str) -> CID:
        return CID.for_dag_cbor(cbor.encode({"seed": seed}))

    # MST node: 16 post keys whose TIDs fall within two days, as consecutive
    # posts of one account do; each entry stores only its suffix after the
    # prefix it shares with the previous key.
    rng = random.Random(20240715)
    start_us = 1_721_000_000_000_000
    stamps = sorted(start_us + rng.randrange(2 * 86_400_000_000) for _ in range(16))
    keys = [f"app.bsky.feed.post/{_tid((us << 10) | rng.randrange(1024))}" for us in stamps]
    entries: list[dict[str, Any]] = []
    previous = b""
    for i, key in enumerate(keys):
        raw = key.encode()
        shared = 0
        while shared < min(len(raw), len(previous)) and raw[shared] == previous[shared]:
            shared += 1
        entries.append({"k": raw[shared:], "p": shared, "t": link(f"subtree {i}"), "v": link(f"record {i}")})
        previous = raw
    mst_node = {"e": entries, "l": link("leftmost subtree")}

    author = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    root_uri = f"at://{author}/app.bsky.feed.post/3kz7lqvwc6d2a"
    parent_uri = "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3kz7mdtrq7s2b"
    text = "Replying to @atproto.com: the new sync spec is out, see https://atproto.com/specs/sync 🎉"
    mention, url = "@atproto.com", "https://atproto.com/specs/sync"
    m_at = text.encode().index(mention.encode())
    u_at = text.encode().index(url.encode())
    post = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2024-07-15T18:21:09.482Z",
        "langs": ["en"],
        "reply": {
            "root": {"uri": root_uri, "cid": str(link("root post"))},
            "parent": {"uri": parent_uri, "cid": str(link("parent post"))},
        },
        "facets": [
            {
                "index": {"byteStart": m_at, "byteEnd": m_at + len(mention)},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": author}],
            },
            {
                "index": {"byteStart": u_at, "byteEnd": u_at + len(url)},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": url}],
            },
        ],
    }

    unsigned = {
        "did": author,
        "version": 3,
        "data": link("mst root"),
        "rev": "3kz7n4ujdwk2c",
        "prev": None,
    }
    signer = PrivateKey.generate("k256")
    commit = {**unsigned, "sig": signer.sign(cbor.encode(unsigned))}

    return {
        "MST node": cbor.encode(mst_node),
        "post record": cbor.encode(post),
        "signed commit": cbor.encode(commit),
    }


Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def _atrepo() -> Codec:
    from atrepo.core import cbor

    return cbor.decode, cbor.encode


def _atproto() -> Codec:
    # The SDK's public decoder is atproto_core.cbor.decode_dag (a thin wrapper
    # over libipld); it exposes no encoder, so encoding uses libipld directly.
    import libipld
    from atproto_core.cbor import decode_dag

    return decode_dag, libipld.encode_dag_cbor


def _arroba() -> Codec:
    # arroba's blocks (arroba.storage.Block) and commits go through dag_cbor.
    import arroba.storage  # noqa: F401  (loads arroba's multiformats setup, as in use)
    import dag_cbor

    return dag_cbor.decode, dag_cbor.encode


def _atmst() -> Codec:
    # atmst calls cbrrr's module-level functions with their defaults.
    import atmst.mst.node  # noqa: F401
    import cbrrr

    return cbrrr.decode_dag_cbor, cbrrr.encode_dag_cbor


_CODECS: tuple[tuple[str, str, tuple[str, ...], Callable[[], Codec]], ...] = (
    ("atrepo", "atrepo", ("atrepo",), _atrepo),
    ("atproto", "atproto (libipld)", ("atproto_core", "libipld"), _atproto),
    ("arroba", "arroba (dag_cbor)", ("arroba", "dag_cbor"), _arroba),
    ("atmst", "atmst (cbrrr)", ("atmst", "cbrrr"), _atmst),
)


def _decode_setup(load: Callable[[], Codec], data: bytes) -> Callable[[], Runner]:
    def setup() -> Runner:
        decode, encode = load()
        expect(encode(decode(data)) == data, "decode then encode does not reproduce the input bytes")
        return call_repeat(decode, data)

    return setup


def _encode_setup(load: Callable[[], Codec], data: bytes) -> Callable[[], Runner]:
    def setup() -> Runner:
        decode, encode = load()
        native = decode(data)
        expect(encode(native) == data, "encoding the decoded value does not reproduce the input bytes")
        return call_repeat(encode, native)

    return setup


@register("cbor", "DAG-CBOR decode and encode (objects/s)", order=10)
def build() -> list[Case]:
    """Decode and encode cases for each sample object."""
    cases: list[Case] = []
    for name, data in sample_objects().items():
        for op, make in (("decode", _decode_setup), ("encode", _encode_setup)):
            contenders = tuple(
                Contender(impl, label, make(load, data), needs=needs) for impl, label, needs, load in _CODECS
            )
            what = f"{op} one {name} ({len(data)} bytes)"
            cases.append(Case(f"{op} {name} ({len(data)} B)", what, contenders))
    return cases
