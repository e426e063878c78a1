"""The typed model of lexicon documents: one frozen value per schema type.

A parsed document is plain data: :mod:`.document` builds it (and checks every
rule of the schema language on the way), :mod:`.registry` resolves its refs,
and :mod:`.compile` turns it into validators. Refs are stored already
normalised to ``nsid#name`` so nothing downstream needs the document they came
from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIELD_TYPES",
    "NAMED_TYPES",
    "PRIMARY_TYPES",
    "Array",
    "Blob",
    "Body",
    "Boolean",
    "Bytes",
    "CidLink",
    "Def",
    "Field",
    "Integer",
    "LexiconDoc",
    "Object",
    "Params",
    "PermissionSet",
    "Procedure",
    "Query",
    "Record",
    "Ref",
    "String",
    "Subscription",
    "Token",
    "Union",
    "Unknown",
]


@dataclass(frozen=True, slots=True)
class Boolean:
    default: bool | None = None
    const: bool | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Integer:
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[int, ...] | None = None
    default: int | None = None
    const: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class String:
    format: str | None = None
    min_length: int | None = None  # UTF-8 bytes
    max_length: int | None = None
    min_graphemes: int | None = None
    max_graphemes: int | None = None
    enum: tuple[str, ...] | None = None
    const: str | None = None
    known_values: tuple[str, ...] | None = None  # open: a hint, never enforced
    default: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Bytes:
    min_length: int | None = None
    max_length: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class CidLink:
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Blob:
    accept: tuple[str, ...] | None = None  # MIME patterns: "type/sub", "type/*", "*/*"
    max_size: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Ref:
    ref: str  # normalised: "nsid#name" (main included)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Union:
    refs: tuple[str, ...]  # normalised as Ref.ref
    closed: bool = False
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Array:
    items: Field
    min_length: int | None = None
    max_length: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Object:
    properties: dict[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    nullable: frozenset[str] = frozenset()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Token:
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Params:
    """HTTP query parameters: scalars, or arrays of scalars."""

    properties: dict[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """An input or output body: its MIME type and, for JSON, its schema."""

    encoding: str
    schema: Object | Ref | Union | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    key: str  # "tid", "nsid", "any" or "literal:<rkey>"
    record: Object
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    parameters: Params | None = None
    output: Body | None = None
    errors: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Procedure:
    parameters: Params | None = None
    input: Body | None = None
    output: Body | None = None
    errors: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    parameters: Params | None = None
    message: Union | None = None
    errors: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """An OAuth scope bundle: parsed and kept, not interpreted here."""

    permissions: tuple[dict[str, Any], ...] = ()
    title: str | None = None
    detail: str | None = None
    description: str | None = None


#: A type usable for a property, an array item or a body schema.
Field = Boolean | Integer | String | Bytes | CidLink | Blob | Unknown | Ref | Union | Array | Object
#: A named def of a document.
Def = (
    Boolean
    | Integer
    | String
    | Bytes
    | CidLink
    | Blob
    | Array
    | Object
    | Token
    | Record
    | Query
    | Procedure
    | Subscription
    | PermissionSet
)

#: Types that may only be the ``main`` def of a document.
PRIMARY_TYPES = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
#: Types a def may have under any name (never ``ref``, ``union``, ``unknown``, ``params``, ``permission``).
NAMED_TYPES = (
    frozenset({"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "token"})
    | PRIMARY_TYPES
)
#: Types of properties and array items.
FIELD_TYPES = frozenset(
    {
        "boolean",
        "integer",
        "string",
        "bytes",
        "cid-link",
        "blob",
        "unknown",
        "ref",
        "union",
        "array",
        "object",
    }
)


@dataclass(frozen=True, slots=True)
class LexiconDoc:
    """One lexicon document: its NSID and its defs by name."""

    id: str
    defs: dict[str, Def]
    revision: int | None = None
    description: str | None = None

    @property
    def main(self) -> Def | None:
        return self.defs.get("main")
