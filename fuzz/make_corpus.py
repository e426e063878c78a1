"""Write the seed corpora (``python -m fuzz.make_corpus``): a few valid and invalid inputs per target.

Built from the same fixtures the tests use (interop vectors, the PLC chain
helpers, small repositories), deterministic keys, and the reproducers of past
findings. Existing files are overwritten; files added by hand (reproducers
saved from crashes) are kept.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from atrepo.core import cbor
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.events import encode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.mst import encode_node
from atrepo.core.repo import Repo, Write
from atrepo.identity.plc.operations import LogEntry, build_operation, build_tombstone, genesis_did
from atrepo.identity.plc.operations import Service as PLCService

from .harness import CORPUS, ROOT

INTEROP = ROOT / "tests" / "interop"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TIME = "2024-05-01T12:34:56.789Z"


def _key(index: int, curve: str = "k256") -> PrivateKey:
    return PrivateKey.from_bytes(curve, hashlib.sha256(f"fuzz-seed-key-{index}".encode()).digest())  # type: ignore[arg-type]


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _repo() -> tuple[Repo, Any, Any]:
    signer = _key(0)
    writes = [
        Write("create", "app.bsky.feed.post", f"3k{i:011d}", {"$type": "app.bsky.feed.post", "text": f"p{i}"})
        for i in range(6)
    ]
    first = Repo.create(DID, signer, writes)
    post = "app.bsky.feed.post"
    second = first.repo.apply_writes(
        [
            Write("create", "app.bsky.feed.like", "3kzzzzzzzzzz2", {"$type": "app.bsky.feed.like"}),
            Write("update", post, f"3k{1:011d}", {"$type": post, "text": "e"}),
            Write("delete", post, f"3k{2:011d}"),
        ],
        signer,
    )
    return first.repo, first, second


def cbor_and_datamodel() -> None:
    cases = json.loads((INTEROP / "data-model" / "data-model-fixtures.json").read_text("utf-8"))
    for i, case in enumerate(cases):
        import base64

        data = base64.b64decode(case["cbor_base64"] + "=" * (-len(case["cbor_base64"]) % 4))
        _write("cbor", f"fixture-{i}", data)
        _write("datamodel", f"fixture-{i}.json", json.dumps(case["json"]).encode())
    _write("cbor", "float", b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00")
    _write("cbor", "non-canonical-int", b"\x18\x01")
    _write("cbor", "unsorted-map", b"\xa2\x61b\x01\x61a\x02")
    _write("cbor", "deep", b"\x81" * 80 + b"\x00")
    _write("cbor", "link", cbor.encode({"l": CID.for_raw(b"x"), "b": b"\x00\x01"}))
    invalid = json.loads((INTEROP / "data-model" / "data-model-invalid.json").read_text("utf-8"))
    for i, case in enumerate(invalid[:6]):
        _write("datamodel", f"invalid-{i}.json", json.dumps(case.get("json", case)).encode())
    _write("datamodel", "long-key.json", json.dumps({"$type": "x.y", "k" * 3000: [0] * 2000}).encode())
    _write("datamodel", "nan.json", b'{"$type": "x.y", "a": NaN}')


def cids() -> None:
    for line in (INTEROP / "syntax" / "cid_syntax_valid.txt").read_text("utf-8").splitlines()[:6]:
        if line and not line.startswith("#"):
            _write("cid", f"text-{hashlib.sha1(line.encode()).hexdigest()[:8]}", line.encode())
    for line in (INTEROP / "syntax" / "cid_syntax_invalid.txt").read_text("utf-8").splitlines()[:6]:
        if line and not line.startswith("#"):
            _write("cid", f"bad-{hashlib.sha1(line.encode()).hexdigest()[:8]}", line.encode())
    _write("cid", "binary-dag-cbor", CID.for_dag_cbor(b"\xa0").raw)
    _write("cid", "binary-raw", CID.for_raw(b"x").raw)
    _write("cid", "binary-v0", b"\x12\x20" + bytes(32))
    _write("cid", "binary-long-varint", b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x12\x20" + bytes(32))


def cars_nodes_frames() -> None:
    repo, first, second = _repo()
    blocks = list(repo.export_blocks())
    whole = write_car([repo.commit.cid], blocks)
    _write("car", "repo", whole)
    _write("car", "commit-slice", second.car_slice())
    _write("car", "empty-roots", write_car([], blocks[:2]))
    _write("car", "bad-header", b"\x02\xa1\xff" + whole[40:80])
    _write("car", "truncated", whole[: len(whole) // 2])
    _write("car", "v2-header", b"\x0b\xa1gversion\x02")
    nodes = [(cid, data) for cid, data in blocks[1:] if data[:3] == b"\xa2\x61e"]
    for i, (_cid, data) in enumerate(nodes[:4]):
        _write("mst_node", f"node-{i}", data)
    val = CID.for_dag_cbor(b"\xa0")
    _write("mst_node", "empty", encode_node([], [], [None]))
    _write("mst_node", "newline-key", encode_node([b"com.example/a\ncom.example/b"], [val], [None, None]))
    _write(
        "mst_node",
        "long-prefix",
        encode_node(
            [b"com.example/" + b"x" * 1100, b"com.example/" + b"x" * 1100 + b"y"], [val, val], [None] * 3
        ),
    )
    _write("mst_node", "unsorted", encode_node([b"b/b", b"a/a"], [val, val], [None] * 3))
    _write("firehose", "commit", encode_frame(second.to_event(7, TIME)))
    _write("firehose", "first-commit", encode_frame(first.to_event(1, TIME)))
    _write("firehose", "sync", encode_frame(second.to_sync_event(8, TIME)))
    _write(
        "firehose", "error", cbor.encode({"op": -1}) + cbor.encode({"error": "FutureCursor", "message": "x"})
    )
    _write("firehose", "info", cbor.encode({"op": 1, "t": "#info"}) + cbor.encode({"name": "OutdatedCursor"}))
    _write("firehose", "unknown", cbor.encode({"op": 1, "t": "#new"}) + cbor.encode({}))
    _write("firehose", "one-item", cbor.encode({"op": 1, "t": "#commit"}))


def plc() -> None:
    a, b = _key(1), _key(2, "p256")
    rotation = [a.public_key.did_key(), b.public_key.did_key()]
    services = {"atproto_pds": PLCService("AtprotoPersonalDataServer", "https://pds.example.com")}
    first = build_operation(
        a,
        rotation_keys=rotation,
        verification_methods={"atproto": b.public_key.did_key()},
        also_known_as=["at://alice.example.com"],
        services=services,
        prev=None,
    )
    did = genesis_did(first)
    from atrepo.identity.plc.operations import operation_cid

    second = build_operation(
        b,
        rotation_keys=rotation,
        verification_methods={"atproto": a.public_key.did_key()},
        also_known_as=["at://bob.example.com"],
        services=services,
        prev=operation_cid(first),
    )
    tomb = build_tombstone(a, operation_cid(second))
    ms = 1_700_000_000_000
    log = [
        LogEntry(did, op, operation_cid(op), False, ms + i * 1000).to_json()
        for i, op in enumerate((first, second, tomb))
    ]
    _write("plc", "audit-log.json", json.dumps(log).encode())
    _write("plc", "genesis.json", json.dumps(first).encode())
    _write("plc", "tombstone.json", json.dumps(tomb).encode())
    _write("plc", "not-a-list.json", b"7")
    _write("plc", "deep.json", b"[" * 3000 + b"]" * 3000)
    _write("plc", "timestamp", b"2024-05-01T12:34:56.789Z")
    _write("plc", "timestamp-0999", b"0999-12-31T23:59:59.999Z")
    for path in sorted((ROOT / "tests" / "interop-plc" / "audit_log").rglob("*.json"))[:4]:
        _write("plc", f"interop-{path.stem}.json", path.read_bytes())
    doc = {
        "id": did,
        "alsoKnownAs": ["at://alice.example.com"],
        "verificationMethod": [
            {
                "id": "#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": a.public_key.multikey(),
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://p.example",
            }
        ],
    }
    _write("did_document", "plc.json", json.dumps(doc).encode())
    _write("did_document", "web.json", json.dumps({**doc, "id": "did:web:example.com"}).encode())
    _write("did_document", "no-key.json", json.dumps({**doc, "verificationMethod": []}).encode())
    _write("did_document", "deep.json", b'{"id": "did:web:x.com", "a": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    _write("did_document", "not-utf8.json", b'{"id": "\xff"}')
    _write("did_document", "nan.json", b'{"id": "did:web:x.com", "a": NaN}')


def syntax() -> None:
    folder = INTEROP / "syntax"
    for path in sorted(folder.glob("*_syntax_*.txt")):
        lines = [ln for ln in path.read_text("utf-8").splitlines() if ln and not ln.startswith("#")]
        for i, line in enumerate(lines[:3]):
            _write("syntax", f"{path.stem}-{i}", b"\x01" + line.encode())
    _write("syntax", "long-handle", b"\x00" + b"a." * 40)
    _write("syntax", "long-did", b"\x00did:plc:" + b"a" * 30)
    _write("syntax", "long-uri", b"\x00at://did:plc:abc/app.bsky.feed.post/")


def lexicon() -> None:
    """Mode byte 0: a lexicon document; odd mode bytes: a record (see fuzz/fuzz_lexicon.py)."""
    folder = INTEROP / "lexicon"
    data = ROOT / "src" / "atrepo" / "lexicons" / "data"
    for name in ("app/bsky/feed/post", "app/bsky/richtext/facet", "com/atproto/repo/strongRef"):
        _write(
            "lexicon", f"doc-{name.rsplit('/', 1)[1]}.json", b"\x00" + (data / f"{name}.json").read_bytes()
        )
    for path in sorted((folder / "catalog").glob("*.json")):
        _write("lexicon", f"doc-catalog-{path.stem}.json", b"\x00" + path.read_bytes())
    for kind in ("valid", "invalid"):
        cases = json.loads((folder / f"lexicon-{kind}.json").read_text("utf-8"))
        for i, case in enumerate(cases[:4]):
            _write("lexicon", f"doc-{kind}-{i}.json", b"\x00" + json.dumps(case["lexicon"]).encode())
    _write(
        "lexicon",
        "doc-recursive.json",
        b"\x00"
        + json.dumps(
            {
                "lexicon": 1,
                "id": "com.example.tree",
                "defs": {
                    "main": {
                        "type": "record",
                        "key": "any",
                        "record": {
                            "type": "object",
                            "properties": {
                                "kids": {"type": "array", "items": {"type": "ref", "ref": "#main"}},
                                "next": {"type": "union", "refs": ["#main", "app.bsky.feed.post"]},
                            },
                        },
                    }
                },
            }
        ).encode(),
    )
    # Records: mode 0x01 checks app.bsky.feed.post and example.lexicon.record (see COLLECTIONS).
    for i, case in enumerate(json.loads((folder / "record-data-valid.json").read_text("utf-8"))):
        _write("lexicon", f"record-catalog-{i}.json", b"\x01" + json.dumps(case["data"]).encode())
    blob = {"$type": "blob", "ref": {"$link": str(CID.for_raw(b"blob"))}, "mimeType": "image/png", "size": 9}
    strong_ref = {
        "uri": f"at://{DID}/app.bsky.feed.post/3k2a4xuqebc2z",
        "cid": str(CID.for_dag_cbor(b"\xa0")),
    }
    post = {
        "$type": "app.bsky.feed.post",
        "text": "hello \U0001f44d\U0001f3ff e\u0301",
        "createdAt": TIME,
        "langs": ["en"],
        "reply": {"root": strong_ref, "parent": strong_ref},
        "embed": {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": ""}]},
        "facets": [
            {
                "index": {"byteStart": 0, "byteEnd": 5},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": DID}],
            }
        ],
        "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "x"}]},
    }
    _write("lexicon", "record-post.json", b"\x01" + json.dumps(post).encode())
    _write(
        "lexicon",
        "record-post-legacy-blob.json",
        b"\x21"
        + json.dumps(
            {
                **post,
                "embed": {
                    "$type": "app.bsky.embed.images",
                    "images": [
                        {"image": {"cid": str(CID.for_raw(b"blob")), "mimeType": "image/png"}, "alt": ""}
                    ],
                },
            }
        ).encode(),
    )
    profile = {"$type": "app.bsky.actor.profile", "displayName": "Alice", "avatar": blob, "createdAt": TIME}
    _write("lexicon", "record-profile.json", b"\x05" + json.dumps(profile).encode())
    gate = {
        "$type": "app.bsky.feed.threadgate",
        "post": strong_ref["uri"],
        "allow": [{"$type": "app.bsky.feed.threadgate#mentionRule"}, {"$type": "com.example.future"}],
        "createdAt": TIME,
    }
    _write("lexicon", "record-threadgate.json", b"\x07" + json.dumps(gate).encode())
    _write(
        "lexicon",
        "record-big-int.json",
        b"\x01"
        + json.dumps(
            {**post, "facets": [{"index": {"byteStart": 0, "byteEnd": 2**60}, "features": []}]}
        ).encode(),
    )


def main() -> None:
    cbor_and_datamodel()
    cids()
    cars_nodes_frames()
    plc()
    syntax()
    lexicon()
    for target in sorted(p.name for p in CORPUS.iterdir()):
        print(f"{target}: {sum(1 for _ in (CORPUS / target).iterdir())} files")


if __name__ == "__main__":
    main()
