"""Finding the blobs a record references, wherever they sit in it.

A host must know every blob a record names: each must be an upload of the
same account (checked when the record is written), stops being temporary once
referenced, and is deleted when its last reference goes (repo-api.md §1, §9).
Lexicons are no help for this: with ``validate: false``, or for an unknown
collection, or inside ``unknown`` fields and open unions, the schema does not
say where blobs are, so the value itself is walked, the way the reference's
``enumBlobRefs`` does.

A blob is any object whose ``$type`` is ``"blob"`` and whose ``ref`` is a CID
link, as the data model defines it (repository.md §1); its ``mimeType`` and
``size`` are reported as given, and the data-model check (``validate_record``)
is what refuses a malformed one. Legacy ``{cid, mimeType}`` objects are not
blobs here: the write path refuses them before (``find_legacy_blob``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cid import CID

__all__ = ["BlobRef", "blob_refs", "find_blobs"]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """One blob object met in a value: what the record claims about the blob.

    ``mime_type`` and ``size`` are None when the object lacks them or has the
    wrong type (a data-model violation that the record's own check reports).
    """

    cid: CID
    mime_type: str | None
    size: int | None


def find_blobs(value: Any) -> list[BlobRef]:
    """Every blob object inside ``value``, in document order (repeats included).

    Iterative, so a deeply nested value costs no recursion; a blob object's
    own fields are not searched further (a blob holds no blob).
    """
    out: list[BlobRef] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            ref = item.get("ref")
            if item.get("$type") == "blob" and type(ref) is CID:
                mime = item.get("mimeType")
                size = item.get("size")
                out.append(
                    BlobRef(
                        ref,
                        mime if type(mime) is str else None,
                        size if type(size) is int else None,
                    )
                )
                continue
            stack.extend(reversed(item.values()))
        elif kind is list:
            stack.extend(reversed(item))
    return out


def blob_refs(value: Any) -> list[CID]:
    """The distinct blob CIDs ``value`` references, in order of first appearance.

    What ``RepoTransaction.apply_commit`` takes per written path (``blob_refs``).
    """
    seen: dict[CID, None] = {}
    for blob in find_blobs(value):
        seen.setdefault(blob.cid, None)
    return list(seen)
