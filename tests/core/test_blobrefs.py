"""Finding every blob a record references: typed fields, open unions, unknown data, lists."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core.blobrefs import BlobRef, blob_refs, find_blobs
from atrepo.core.cid import CID
from atrepo.core.datamodel import json_to_value

A = CID.for_raw(b"a")
B = CID.for_raw(b"b")
C = CID.for_raw(b"c")


def blob(cid: CID, mime: str = "image/png", size: int = 10) -> dict[str, Any]:
    return {"$type": "blob", "ref": cid, "mimeType": mime, "size": size}


def test_a_record_without_blobs_has_none() -> None:
    assert find_blobs({"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "x"}) == []
    assert blob_refs({}) == [] and blob_refs([]) == [] and blob_refs("text") == []


def test_blobs_are_found_everywhere_in_document_order() -> None:
    record = {
        "$type": "app.bsky.feed.post",
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [{"image": blob(A), "alt": ""}, {"image": blob(B, "image/jpeg", 5), "alt": ""}],
        },
        # fields no lexicon names (``unknown`` data, another app's extension) are searched too
        "extension": {"deep": [[{"x": blob(C, "video/mp4", 99)}]]},
    }
    assert find_blobs(record) == [
        BlobRef(A, "image/png", 10),
        BlobRef(B, "image/jpeg", 5),
        BlobRef(C, "video/mp4", 99),
    ]
    assert blob_refs(record) == [A, B, C]


def test_repeats_are_reported_once_by_blob_refs() -> None:
    record = {"$type": "x.y.z", "a": blob(B), "b": [blob(A), blob(B)], "c": blob(A, "image/gif", 3)}
    assert [b.cid for b in find_blobs(record)] == [B, A, B, A]
    assert blob_refs(record) == [B, A]


def test_a_blob_is_found_from_its_json_form() -> None:
    value = json_to_value(
        {
            "$type": "app.bsky.actor.profile",
            "avatar": {"$type": "blob", "ref": {"$link": str(A)}, "mimeType": "image/png", "size": 4},
        }
    )
    assert find_blobs(value) == [BlobRef(A, "image/png", 4)]


def test_things_that_are_not_blobs() -> None:
    record = {
        "$type": "x.y.z",
        "link": A,  # a plain cid-link is not a blob
        "legacy": {"cid": str(A), "mimeType": "image/png"},  # refused elsewhere, not a blob here
        "wrongType": {"$type": "blobby", "ref": A, "mimeType": "a/b", "size": 1},
        "refNotLink": {"$type": "blob", "ref": str(A), "mimeType": "a/b", "size": 1},
        "bytes": b"\x00",
    }
    assert find_blobs(record) == []


def test_malformed_fields_are_reported_as_missing() -> None:
    record = {"b": {"$type": "blob", "ref": A, "mimeType": 5, "size": "big"}}
    assert find_blobs(record) == [BlobRef(A, None, None)]


def test_deep_nesting_needs_no_recursion() -> None:
    value: Any = blob(A)
    for _ in range(5000):
        value = {"n": [value]}
    assert blob_refs(value) == [A]


_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.binary(max_size=3))


@st.composite
def _trees(draw: st.DrawFn) -> tuple[Any, list[CID]]:
    """A random value and the blob CIDs it holds, in document order."""
    cids = [A, B, C]

    def build(depth: int) -> tuple[Any, list[CID]]:
        kind = draw(st.integers(0, 3 if depth < 4 else 0))
        if kind == 0:
            if draw(st.booleans()):
                cid = draw(st.sampled_from(cids))
                return blob(cid), [cid]
            return draw(_leaves), []
        if kind in (1, 2):
            items = [build(depth + 1) for _ in range(draw(st.integers(0, 3)))]
            return [v for v, _ in items], [c for _, found in items for c in found]
        keys = draw(st.lists(st.text("abc", min_size=1, max_size=3), unique=True, max_size=3))
        pairs = [(k, build(depth + 1)) for k in keys]
        return {k: v for k, (v, _) in pairs}, [c for _, (_, found) in pairs for c in found]

    return build(0)


@settings(max_examples=150, deadline=None)
@given(_trees())
def test_every_blob_is_found_in_order(tree: tuple[Any, list[CID]]) -> None:
    value, expected = tree
    assert [b.cid for b in find_blobs(value)] == expected
    assert blob_refs(value) == list(dict.fromkeys(expected))
