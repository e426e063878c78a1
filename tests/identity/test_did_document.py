"""DID documents: extraction of key, PDS and handle, and rejection of bad shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from atrepo.core.errors import InvalidDIDDocument, InvalidSyntax, UnsupportedDIDMethod
from atrepo.core.keys import PrivateKey, parse_did_key
from atrepo.identity.did import did_method, did_web_url
from atrepo.identity.document import parse_did_document, parse_did_document_bytes, pds_endpoint_problem

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
K256 = "zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc"
P256 = "zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo"
CRYPTO = Path(__file__).resolve().parent.parent / "interop" / "crypto" / "signature-fixtures.json"


def make_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": DID,
        "alsoKnownAs": ["at://Alice.Example.com"],
        "verificationMethod": [
            {"id": f"{DID}#atproto", "type": "Multikey", "controller": DID, "publicKeyMultibase": K256}
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com",
            }
        ],
    }
    doc.update(overrides)
    return doc


def test_minimal_document() -> None:
    ident = parse_did_document(make_doc(), DID)
    assert ident.did == DID
    assert ident.signing_key == parse_did_key("did:key:" + K256)
    assert ident.pds_endpoint == "https://pds.example.com"
    assert ident.handle == "alice.example.com"
    assert ident.to_json()["signingKey"] == "did:key:" + K256


def test_relative_key_id_and_p256() -> None:
    vm = {"id": "#atproto", "type": "Multikey", "controller": DID, "publicKeyMultibase": P256}
    ident = parse_did_document(make_doc(verificationMethod=[vm]))
    assert ident.signing_key is not None and ident.signing_key.curve == "p256"


def test_first_valid_key_wins_and_bad_entries_are_skipped() -> None:
    methods = [
        {"id": "#atproto_label", "type": "Multikey", "controller": DID, "publicKeyMultibase": P256},
        {"id": "#atproto", "type": "Multikey", "controller": "did:plc:other", "publicKeyMultibase": P256},
        {"id": "#atproto", "type": "Multikey", "controller": DID, "publicKeyMultibase": "zgarbage"},
        {"id": "#atproto", "type": "Multikey", "controller": DID, "publicKeyMultibase": K256},
        {"id": "#atproto", "type": "Multikey", "controller": DID, "publicKeyMultibase": P256},
    ]
    ident = parse_did_document(make_doc(verificationMethod=methods))
    assert ident.signing_key == parse_did_key("did:key:" + K256)


@pytest.mark.parametrize("case", json.loads(CRYPTO.read_text()))
def test_legacy_verification_method_types(case: dict[str, Any]) -> None:
    vm = {
        "id": "#atproto",
        "type": case["didDocSuite"],
        "controller": DID,
        "publicKeyMultibase": case["publicKeyMultibase"],
    }
    ident = parse_did_document(make_doc(verificationMethod=[vm]))
    assert ident.signing_key == parse_did_key(case["publicKeyDid"])


def test_legacy_uncompressed_key() -> None:
    key = PrivateKey.generate("p256").public_key
    from atrepo.core.multibase import b58encode

    vm = {
        "id": "#atproto",
        "type": "EcdsaSecp256r1VerificationKey2019",
        "controller": DID,
        "publicKeyMultibase": "z" + b58encode(key.uncompressed()),
    }
    assert parse_did_document(make_doc(verificationMethod=[vm])).signing_key == key


def test_no_key_no_pds_is_a_broken_account_not_an_error() -> None:
    ident = parse_did_document(make_doc(verificationMethod=[], service=[], alsoKnownAs=[]))
    assert (ident.signing_key, ident.pds_endpoint, ident.handle) == (None, None, None)
    ident = parse_did_document({"id": DID})
    assert ident.signing_key is None


def test_handle_is_first_valid_at_uri() -> None:
    aka = ["https://bsky.app", "at://not a handle", "at://bob.test/path", "at://Bob.Example.org", "at://x.y"]
    assert parse_did_document(make_doc(alsoKnownAs=aka)).handle == "bob.example.org"


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://pds.example.com", True),
        ("http://localhost:2583", True),
        ("https://pds.example.com/", True),
        ("https://pds.example.com/xrpc", False),
        ("https://user@pds.example.com", False),
        ("ftp://pds.example.com", False),
        ("https://pds.example.com?x=1", False),
        ("https://", False),
        ("https://pds.example.com:99999", False),
        (42, False),
    ],
)
def test_pds_endpoint_rules(endpoint: object, ok: bool) -> None:
    assert (pds_endpoint_problem(endpoint) is None) is ok
    svc = {"id": f"{DID}#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": endpoint}
    got = parse_did_document(make_doc(service=[svc])).pds_endpoint
    assert (got is not None) is ok


def test_pds_needs_the_right_type() -> None:
    svc = {"id": "#atproto_pds", "type": "Other", "serviceEndpoint": "https://pds.example.com"}
    assert parse_did_document(make_doc(service=[svc])).pds_endpoint is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "JSON object"),
        ({"id": 5}, "'id'"),
        ({"id": "not a did"}, "'id'"),
        (make_doc(alsoKnownAs="at://x.com"), "'alsoKnownAs'"),
        (make_doc(alsoKnownAs=[5]), "'alsoKnownAs[0]'"),
        (make_doc(verificationMethod={}), "'verificationMethod'"),
        (make_doc(verificationMethod=["x"]), "'verificationMethod[0]'"),
        (make_doc(service=None), "'service'"),
        (make_doc(service=[1]), "'service[0]'"),
    ],
)
def test_malformed_documents_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(InvalidDIDDocument, match=re.escape(field)):
        parse_did_document(doc)


def test_document_for_another_did_is_rejected() -> None:
    with pytest.raises(InvalidDIDDocument, match="was resolved"):
        parse_did_document(make_doc(), "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")


def test_document_bytes() -> None:
    assert parse_did_document_bytes(json.dumps(make_doc()).encode(), DID).did == DID
    with pytest.raises(InvalidDIDDocument, match="JSON"):
        parse_did_document_bytes(b"\xff")
    with pytest.raises(InvalidDIDDocument, match="JSON"):
        parse_did_document_bytes(b"[" * 60000)
    with pytest.raises(InvalidDIDDocument, match="more than"):
        parse_did_document_bytes(b" " * 70000)


def test_did_methods() -> None:
    assert did_method(DID) == "plc"
    assert did_method("did:web:example.com") == "web"
    with pytest.raises(UnsupportedDIDMethod):
        did_method("did:key:" + K256)
    with pytest.raises(UnsupportedDIDMethod):
        did_method("did:method:val")
    with pytest.raises(InvalidSyntax):
        did_method("did:plc:UPPERCASEUPPERCASEUPPERCA")
    with pytest.raises(InvalidSyntax):
        did_method("DID:plc:ewvi7nxzyoun6zhxrhs64oiz")
    with pytest.raises(InvalidSyntax):
        did_method("did:plc:short")


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
        ("did:web:Example.COM", "https://example.com/.well-known/did.json"),
        ("did:web:localhost", "http://localhost/.well-known/did.json"),
        ("did:web:localhost%3A8080", "http://localhost:8080/.well-known/did.json"),
    ],
)
def test_did_web_urls(did: str, url: str) -> None:
    assert did_web_url(did) == url


@pytest.mark.parametrize(
    ("did", "error"),
    [
        ("did:web:example.com%3A8080", UnsupportedDIDMethod),
        ("did:web:example.com:user:alice", UnsupportedDIDMethod),
        ("did:web:foo.onion", UnsupportedDIDMethod),
        ("did:web:foo.test", UnsupportedDIDMethod),
        ("did:web:localhost%3A99999", InvalidSyntax),
        ("did:web:localhost%3Ax", InvalidSyntax),
        ("did:web:exa%2Fmple.com", InvalidSyntax),
        ("did:web:-bad-.com", InvalidSyntax),
        ("did:plc:ewvi7nxzyoun6zhxrhs64oiz", InvalidSyntax),
    ],
)
def test_did_web_refusals(did: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        did_web_url(did)


def test_did_web_dev_allows_test_tld() -> None:
    assert did_web_url("did:web:foo.test", dev=True) == "https://foo.test/.well-known/did.json"
