"""DID documents: validate the shape, extract what atproto needs (pure).

A document is untrusted JSON. Its *shape* must be right (wrong types are
:class:`InvalidDIDDocument` naming the field), but a malformed *entry* only
disqualifies that entry: the signing key is the first valid ``#atproto``
verification method and the PDS the first valid ``#atproto_pds`` service, so an
account with neither is merely broken (``signing_key``/``pds_endpoint`` None),
as the spec treats it (identity spec §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from atrepo.core.errors import InvalidDIDDocument, InvalidKey
from atrepo.core.jsonio import parse_outside_json
from atrepo.core.keys import LEGACY_SUITES, PublicKey, parse_legacy_multibase, parse_multikey
from atrepo.core.syntax import is_valid_did, is_valid_handle
from atrepo.identity.limits import MAX_DID_DOCUMENT_BYTES

__all__ = [
    "DIDDocument",
    "Identity",
    "method_key",
    "parse_did_document",
    "parse_did_document_bytes",
    "pds_endpoint_problem",
]

_AT_PREFIX: Final = "at://"
_KEY_FRAGMENT: Final = "#atproto"
_PDS_FRAGMENT: Final = "#atproto_pds"
_PDS_TYPE: Final = "AtprotoPersonalDataServer"


@dataclass(frozen=True, slots=True)
class DIDDocument:
    """What atproto reads from a DID document, plus the document itself.

    ``handle`` is only *claimed* (lower-cased); it must be checked both ways
    before display (see :mod:`atrepo.identity.handle`).
    """

    did: str
    signing_key: PublicKey | None
    pds_endpoint: str | None
    handle: str | None
    doc: Mapping[str, Any] = field(compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Summary for scripts (``--json`` output)."""
        return {
            "did": self.did,
            "handle": self.handle,
            "signingKey": self.signing_key.did_key() if self.signing_key is not None else None,
            "pds": self.pds_endpoint,
            "document": self.doc,
        }


#: The same value under the name callers that think in accounts use.
Identity = DIDDocument


def _list_field(doc: Mapping[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise InvalidDIDDocument(f"field {name!r} must be an array, not {type(value).__name__}")
    return value


def _matches_fragment(entry_id: object, did: str, fragment: str) -> bool:
    return entry_id == fragment or entry_id == did + fragment


def _signing_key(did: str, methods: list[Any]) -> PublicKey | None:
    for index, method in enumerate(methods):
        if not isinstance(method, Mapping):
            raise InvalidDIDDocument(f"field 'verificationMethod[{index}]' must be an object")
        if not _matches_fragment(method.get("id"), did, _KEY_FRAGMENT):
            continue
        if method.get("controller") != did:
            continue
        key = method_key(method)
        if key is not None:
            return key
    return None


def method_key(method: Mapping[str, Any]) -> PublicKey | None:
    """The key of one verification method (``Multikey`` or a legacy suite); None if it holds none we read."""
    text, kind = method.get("publicKeyMultibase"), method.get("type")
    if not isinstance(text, str):
        return None
    try:
        if kind == "Multikey":
            return parse_multikey(text)
        legacy = LEGACY_SUITES.get(kind) if isinstance(kind, str) else None
        if legacy is not None:
            return parse_legacy_multibase(text, legacy)
    except InvalidKey:
        return None
    return None


def pds_endpoint_problem(url: object) -> str | None:
    """Why ``url`` is not a usable PDS endpoint (http(s), host, optional port only)."""
    if not isinstance(url, str):
        return "not a string"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"unparseable URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "scheme must be http or https"
    if not parts.hostname or parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must name a host and carry no user info"
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not carry a path, query or fragment"
    if port == 0:
        return "port 0 is not a port"
    return None


def _pds_endpoint(did: str, services: list[Any]) -> str | None:
    for index, service in enumerate(services):
        if not isinstance(service, Mapping):
            raise InvalidDIDDocument(f"field 'service[{index}]' must be an object")
        if not _matches_fragment(service.get("id"), did, _PDS_FRAGMENT) or service.get("type") != _PDS_TYPE:
            continue
        endpoint = service.get("serviceEndpoint")
        if pds_endpoint_problem(endpoint) is None:
            assert isinstance(endpoint, str)
            return endpoint.removesuffix("/")
    return None


def _handle(also_known_as: list[Any]) -> str | None:
    for index, uri in enumerate(also_known_as):
        if not isinstance(uri, str):
            raise InvalidDIDDocument(f"field 'alsoKnownAs[{index}]' must be a string")
        if uri.startswith(_AT_PREFIX) and is_valid_handle(uri[len(_AT_PREFIX) :]):
            return uri[len(_AT_PREFIX) :].lower()
    return None


def parse_did_document(doc: object, expected_did: str | None = None) -> DIDDocument:
    """Validate a decoded JSON document and extract key, PDS and claimed handle.

    ``expected_did`` is the DID that was resolved; a document for any other
    DID is rejected (a directory or web host must not answer for another).
    """
    if not isinstance(doc, Mapping):
        raise InvalidDIDDocument(f"DID document must be a JSON object, not {type(doc).__name__}")
    did = doc.get("id")
    if not is_valid_did(did):
        raise InvalidDIDDocument(f"field 'id' is not a valid DID: {did!r}"[:200])
    if expected_did is not None and did != expected_did:
        raise InvalidDIDDocument(f"field 'id' is {did!r} but {expected_did!r} was resolved")
    also_known_as = _list_field(doc, "alsoKnownAs")
    methods = _list_field(doc, "verificationMethod")
    services = _list_field(doc, "service")
    return DIDDocument(
        did=did,
        signing_key=_signing_key(did, methods),
        pds_endpoint=_pds_endpoint(did, services),
        handle=_handle(also_known_as),
        doc=doc,
    )


def parse_did_document_bytes(
    data: bytes, expected_did: str | None = None, *, max_bytes: int = MAX_DID_DOCUMENT_BYTES
) -> DIDDocument:
    """Parse a document from the bytes of an HTTP body (size-bounded, UTF-8 JSON)."""
    doc = parse_outside_json(
        data, lambda why: InvalidDIDDocument(f"DID document: {why}"), max_bytes=max_bytes
    )
    return parse_did_document(doc, expected_did)
