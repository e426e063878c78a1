"""CIDs: binary ``CID(bytes)`` and string ``CID.parse``; accepted CIDs round-trip."""

from __future__ import annotations

from atrepo.core.cid import CID

from .harness import guarded


def test_one_input(data: bytes) -> None:
    cid = guarded(lambda: CID(data))
    if isinstance(cid, CID):
        assert cid.raw == data
        assert CID.parse(str(cid)) == cid
    text = data.decode("utf-8", "surrogateescape")
    parsed = guarded(lambda: CID.parse(text))
    if isinstance(parsed, CID):
        assert CID(parsed.raw) == parsed
        assert CID.parse(str(parsed)) == parsed
