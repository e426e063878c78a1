"""Signed repository commits (format version 3).

A commit is the root block of a repository: ``did``, ``version`` (3), ``data``
(the MST root), ``rev`` (a TID), ``prev`` (present, normally null) and ``sig``
(64-byte low-S ECDSA over the DAG-CBOR of the other fields). Unknown extra
fields are kept and signed over, as the reference verifier does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import cbor
from .cid import CID
from .errors import InvalidCBOR, InvalidCommit, InvalidSignature, LimitExceeded
from .keys import PrivateKey, PublicKey
from .syntax import is_valid_did, is_valid_tid

COMMIT_VERSION = 3
_FIELDS = ("did", "version", "data", "rev", "prev", "sig")


@dataclass(frozen=True, slots=True)
class SignedCommit:
    """A decoded commit; ``cid`` and ``raw`` are those of the exact block."""

    did: str
    data: CID
    rev: str
    sig: bytes
    cid: CID
    raw: bytes
    prev: CID | None = None
    version: int = COMMIT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def unsigned_map(self) -> dict[str, Any]:
        """The map that was signed: every field but ``sig``."""
        out: dict[str, Any] = dict(self.extra)
        out.update(did=self.did, version=self.version, data=self.data, rev=self.rev, prev=self.prev)
        return out

    def unsigned_bytes(self) -> bytes:
        return cbor.encode(self.unsigned_map())

    def verify(self, key: PublicKey) -> None:
        """Raise ``InvalidSignature`` unless ``key`` signed this commit."""
        try:
            key.check(self.unsigned_bytes(), self.sig)
        except InvalidSignature as exc:
            raise InvalidSignature(f"commit {self.cid} ({self.did} rev {self.rev}): {exc}") from None

    def is_signed_by(self, key: PublicKey) -> bool:
        return key.verify(self.unsigned_bytes(), self.sig)


def sign_commit(did: str, data: CID, rev: str, key: PrivateKey, *, prev: CID | None = None) -> SignedCommit:
    """Build and sign a version-3 commit."""
    if not is_valid_did(did):
        raise InvalidCommit(f"commit did {did!r} is not a valid DID")
    if not is_valid_tid(rev):
        raise InvalidCommit(f"commit rev {rev!r} is not a valid TID")
    unsigned = {"did": did, "version": COMMIT_VERSION, "data": data, "rev": rev, "prev": prev}
    sig = key.sign(cbor.encode(unsigned))
    unsigned["sig"] = sig
    raw = cbor.encode(unsigned)
    return SignedCommit(did=did, data=data, rev=rev, sig=sig, cid=CID.for_dag_cbor(raw), raw=raw, prev=prev)


def decode_commit(raw: bytes, cid: CID | None = None) -> SignedCommit:
    """Decode and check a commit block's shape (not its signature)."""
    where = f"commit {cid}" if cid is not None else "commit"
    try:
        value = cbor.decode(raw)
    except (InvalidCBOR, LimitExceeded) as exc:
        raise InvalidCommit(f"{where}: not valid DAG-CBOR: {exc}") from None
    if type(value) is not dict:
        raise InvalidCommit(f"{where}: must be a map")
    for name in _FIELDS:
        if name not in value:
            raise InvalidCommit(f"{where}: field {name!r} is missing")
    version = value["version"]
    if type(version) is not int or version != COMMIT_VERSION:
        raise InvalidCommit(f"{where}: version is {version!r}, only 3 is supported")
    did = value["did"]
    if type(did) is not str or not is_valid_did(did):
        raise InvalidCommit(f"{where}: did {did!r} is not a valid DID")
    rev = value["rev"]
    if type(rev) is not str or not is_valid_tid(rev):
        raise InvalidCommit(f"{where}: rev {rev!r} is not a valid TID")
    data = value["data"]
    if type(data) is not CID or not data.is_dag_cbor:
        raise InvalidCommit(f"{where}: data must be a dag-cbor sha256 link")
    prev = value["prev"]
    if prev is not None and (type(prev) is not CID or not prev.is_dag_cbor):
        raise InvalidCommit(f"{where}: prev must be null or a dag-cbor sha256 link")
    sig = value["sig"]
    if type(sig) is not bytes or not sig:
        raise InvalidCommit(f"{where}: sig must be a non-empty byte string")
    extra = {k: v for k, v in value.items() if k not in _FIELDS}
    return SignedCommit(
        did=did,
        data=data,
        rev=rev,
        sig=sig,
        cid=cid if cid is not None else CID.for_dag_cbor(raw),
        raw=raw,
        prev=prev,
        version=version,
        extra=extra,
    )
