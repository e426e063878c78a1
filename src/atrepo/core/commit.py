"""Signed repository commits (format version 3).

A commit is the root block of a repository: ``did``, ``version`` (3), ``data``
(the MST root), ``rev`` (a TID), ``prev`` (present, normally null) and ``sig``
(64-byte low-S ECDSA over the DAG-CBOR of the other fields). Unknown extra
fields are kept and signed over, as the reference verifier does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import cbor, limits
from .cid import CID
from .codec import decode_raw as _decode_raw
from .codec import encode_raw as _encode_raw
from .errors import AtrepoError, InvalidCBOR, InvalidCommit, InvalidSignature, LimitExceeded
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
        """The DAG-CBOR of ``unsigned_map()``, the bytes the signature covers.

        A commit of the five plain fields, each of its type, is encoded by the
        C codec alone: such a map cannot hold what ``cbor.encode``'s data-model
        walk looks for (floats, out-of-range integers, deep nesting).
        """
        data, prev, version = self.data, self.prev, self.version
        if (
            not self.extra
            and type(self.did) is str
            and type(self.rev) is str
            and type(data) is CID
            and (prev is None or type(prev) is CID)
            and type(version) is int
            and version == COMMIT_VERSION
        ):
            fields = {"did": self.did, "version": version, "data": data, "rev": self.rev, "prev": prev}
            return _encode_raw(fields, CID, False)
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
    """Decode and check a commit block's shape (not its signature).

    A block of exactly the six fields, each of its type, is taken straight
    from the C codec: every value is then a checked scalar, so the data-model
    walk ``cbor.decode`` adds could find nothing. Everything else goes the
    general way, which accepts it or says what is wrong.
    """
    if type(raw) is bytes and 0 < len(raw) <= limits.CBOR_PRESCAN_BYTES:
        try:
            value, length = _decode_raw(raw, CID, False)
        except (ValueError, TypeError, AtrepoError):
            value = None
        if type(value) is dict and length == len(raw) and len(value) == len(_FIELDS):
            get = value.get
            did, data, rev, sig, prev, version = (
                get("did"),
                get("data"),
                get("rev"),
                get("sig"),
                get("prev", False),
                get("version"),
            )
            if (
                type(version) is int
                and version == COMMIT_VERSION
                and type(data) is CID
                and data.is_dag_cbor
                and (prev is None or (type(prev) is CID and prev.is_dag_cbor))
                and type(sig) is bytes
                and sig
                and type(did) is str
                and is_valid_did(did)
                and type(rev) is str
                and is_valid_tid(rev)
            ):
                return SignedCommit(
                    did=did,
                    data=data,
                    rev=rev,
                    sig=sig,
                    cid=cid if cid is not None else CID.for_dag_cbor(raw),
                    raw=raw,
                    prev=prev,
                    version=version,
                    extra={},
                )
    return _decode_commit_checked(raw, cid)


def _decode_commit_checked(raw: bytes, cid: CID | None) -> SignedCommit:
    """``decode_commit`` the general way: strict decode, then each field checked in order."""
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
