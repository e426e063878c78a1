"""DID documents: bytes of an HTTP body through ``parse_did_document_bytes``."""

from __future__ import annotations

import json

from atrepo.identity.document import DIDDocument, parse_did_document_bytes

from .harness import guarded


def test_one_input(data: bytes) -> None:
    doc = guarded(lambda: parse_did_document_bytes(data))
    if isinstance(doc, DIDDocument):
        # What was accepted can be printed as JSON (the CLI's --json does this).
        json.dumps(doc.to_json())
    guarded(lambda: parse_did_document_bytes(data, "did:plc:ewvi7nxzyoun6zhxrhs64oiz"))
