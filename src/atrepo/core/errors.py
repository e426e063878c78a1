"""One error family for all of atrepo.

Every failure that comes from outside data is an ``AtrepoError`` subclass that
names what went wrong; the message says where (byte offset, CID, key, field).
Servers map these to XRPC error names; the CLI prints ``name: message``.
"""

from __future__ import annotations


class AtrepoError(Exception):
    """Base of every error atrepo raises on purpose."""

    @property
    def name(self) -> str:
        return type(self).__name__


class InvalidCBOR(AtrepoError):
    """Bytes that are not strict, canonical DAG-CBOR in the AT data model."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class InvalidCID(AtrepoError):
    """A CID that cannot be parsed, or is not allowed where it was found."""


class InvalidDataModel(AtrepoError):
    """A value (JSON or decoded CBOR) outside the AT data model."""


class InvalidSyntax(AtrepoError):
    """An identifier or string format (DID, handle, NSID, TID, ...) broke a rule."""

    def __init__(self, kind: str, value: object, rule: str) -> None:
        self.kind = kind
        self.value = value
        self.rule = rule
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + "...")
        super().__init__(f"invalid {kind} {shown}: {rule}")


class InvalidKey(AtrepoError):
    """A public or private key that cannot be parsed or is not on its curve."""


class InvalidSignature(AtrepoError):
    """A signature that is malformed (length, DER, high-S) or does not verify."""


class LimitExceeded(AtrepoError):
    """Input larger or deeper than a named limit in ``atrepo.core.limits``."""

    def __init__(self, limit: str, value: int, maximum: int, where: str = "") -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        at = f" ({where})" if where else ""
        super().__init__(f"{limit} exceeded: {value} > {maximum}{at}")


class InvalidMST(AtrepoError):
    """A Merkle Search Tree node or tree that breaks a structural rule."""


class MissingBlock(AtrepoError):
    """A block needed to answer was not present in the block source."""

    def __init__(self, cid: object, context: str = "") -> None:
        self.cid = cid
        extra = f" ({context})" if context else ""
        super().__init__(f"missing block {cid}{extra}")


class InvalidCommit(AtrepoError):
    """A commit object that is malformed or fails verification."""


class InvalidCAR(AtrepoError):
    """A CAR file that is truncated, garbled or inconsistent."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class InvalidEvent(AtrepoError):
    """A firehose frame or event message that breaks the event-stream rules."""


class OutOfSync(AtrepoError):
    """A valid event that does not follow the stored state of its repository."""


class InvalidDIDDocument(AtrepoError):
    """A DID document that is malformed or lacks what atproto needs."""


class InvalidPLCOperation(AtrepoError):
    """A did:plc operation or audit log that breaks a rule of the method."""


class ResolutionError(AtrepoError):
    """A DID or handle could not be resolved."""


class UnsupportedDIDMethod(ResolutionError):
    """A syntactically valid DID whose method atproto does not support."""


class InputFileError(AtrepoError):
    """An input file that cannot be opened (missing, unreadable, a directory...)."""


class InvalidWrite(AtrepoError):
    """A repository write that cannot be applied (bad path, record, or state)."""


class InvalidCommitEvent(InvalidEvent):
    """A ``#commit`` or ``#sync`` message that fails a Sync 1.1 check.

    ``check`` names the failed check (``size``, ``car``, ``commit``, ``repo``,
    ``rev``, ``future-rev``, ``signature``, ``ops``, ``forward``, ``inversion``).
    """

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"{check}: {message}")
