"""A registry of lexicon documents by NSID, with every ref resolved at load time.

Adding documents checks that each ``ref`` and union member names a def that
exists (in the registry or in the same batch) and can hold data: a broken
reference is reported when the schema is loaded, not when a record first
reaches it. Validators are compiled on first use and kept, one set per
strictness.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import InvalidLexicon, InvalidLexiconData, LexiconNotFound
from .compile import Bad, Check, Compiler, Options
from .document import parse_document
from .schema import (
    Array,
    Body,
    Def,
    Field,
    LexiconDoc,
    Object,
    Params,
    PermissionSet,
    Procedure,
    Query,
    Record,
    Ref,
    Subscription,
    Token,
    Union,
)

__all__ = ["Registry"]

#: Def types a ref or a union may point at: those that describe data.
_NOT_TARGETS = (Token, Query, Procedure, Subscription, PermissionSet)


class Registry:
    """Lexicon documents by NSID; compiled validators by def."""

    def __init__(self, documents: Iterable[LexiconDoc | dict[str, Any]] = ()) -> None:
        self._docs: dict[str, LexiconDoc] = {}
        self._defs: dict[str, Def] = {}
        self._compilers = {
            True: Compiler(self._defs, Options(strict=True)),
            False: Compiler(self._defs, Options(strict=False)),
        }
        self._record_checks: dict[bool, dict[str, Check]] = {True: {}, False: {}}
        self._json_checks: dict[tuple[bool, bool], dict[str, Check]] = {}
        self._json_compilers: dict[tuple[bool, bool], Compiler] = {}
        self.add(*documents)

    # --- loading -------------------------------------------------------------------

    def add(self, *documents: LexiconDoc | dict[str, Any]) -> None:
        """Add documents (parsed or raw JSON) as one batch; all or none.

        Raises :class:`InvalidLexicon` for a malformed document, an NSID already
        present, or a ref that resolves neither here nor in the batch.
        """
        batch = [d if isinstance(d, LexiconDoc) else parse_document(d) for d in documents]
        seen: set[str] = set()
        for doc in batch:
            if doc.id in self._docs or doc.id in seen:
                raise InvalidLexicon(doc.id, "id", "duplicate", "a lexicon with this id is already loaded")
            seen.add(doc.id)
        added: list[str] = []
        for doc in batch:
            self._docs[doc.id] = doc
            for name, d in doc.defs.items():
                full = f"{doc.id}#{name}"
                self._defs[full] = d
                added.append(full)
        try:
            for doc in batch:
                self._check_refs(doc)
        except InvalidLexicon:
            for doc in batch:
                del self._docs[doc.id]
            for full in added:
                del self._defs[full]
            raise

    def _check_refs(self, doc: LexiconDoc) -> None:
        for path, ref in _refs(doc):
            target = self._defs.get(ref)
            if target is None:
                raise InvalidLexicon(doc.id, path, "unresolved-ref", f"ref {ref} does not resolve")
            if isinstance(target, _NOT_TARGETS):
                kind = type(target).__name__.lower()
                raise InvalidLexicon(
                    doc.id, path, "ref-target", f"ref {ref} names a {kind}, which holds no data"
                )

    # --- lookup --------------------------------------------------------------------

    def __contains__(self, nsid: object) -> bool:
        return nsid in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._docs))

    def document(self, nsid: str) -> LexiconDoc:
        try:
            return self._docs[nsid]
        except KeyError:
            raise LexiconNotFound(nsid) from None

    def get_def(self, ref: str) -> Def:
        """The def named ``nsid#name`` (or ``nsid`` for ``main``)."""
        full = ref if "#" in ref else f"{ref}#main"
        try:
            return self._defs[full]
        except KeyError:
            raise LexiconNotFound(ref, "lexicon def") from None

    def record_def(self, nsid: str) -> Record | None:
        """The record schema of a collection, or ``None`` when it is not a known record type."""
        d = self._defs.get(f"{nsid}#main")
        return d if isinstance(d, Record) else None

    # --- validation ------------------------------------------------------------------

    def validator(self, ref: str, *, strict: bool = True) -> Check:
        """The compiled checker of a data def (raises ``Bad``; see :meth:`validate`)."""
        full = ref if "#" in ref else f"{ref}#main"
        d = self._defs.get(full)
        if d is None or isinstance(d, _NOT_TARGETS):
            raise LexiconNotFound(ref, "lexicon def")
        return self._compilers[strict].named(full)

    def field_validator(self, field: Field, *, strict: bool = True) -> Check:
        """The compiled checker of an inline field (a body or message schema)."""
        return self._compilers[strict].field(field)

    def compiler(self, *, strict: bool = True) -> Compiler:
        return self._compilers[strict]

    def validate(self, ref: str, value: Any, *, strict: bool = True, what: str = "value") -> None:
        """Check ``value`` against the def ``ref``; raises :class:`InvalidLexiconData`."""
        check = self.validator(ref, strict=strict)
        try:
            check(value)
        except Bad as bad:
            raise InvalidLexiconData(ref, what, bad.path, bad.rule, bad.reason) from None

    def validate_json_record(
        self, nsid: str, obj: Any, *, strict: bool = True, raw_blob_refs: bool = True
    ) -> Any:
        """Validate a record in JSON form and return it as a data-model value, in one pass.

        The same verdict as ``datamodel.json_to_value`` then :meth:`validate_record`,
        faster: only links, bytes, blobs and undeclared data are converted (see
        :mod:`.fromjson`). Data-model failures raise :class:`InvalidLexiconData`
        with rule ``data-model``.
        """
        key = (strict, raw_blob_refs)
        table = self._json_checks.get(key)
        if table is None:
            table = self._json_checks[key] = {}
        check = table.get(nsid)
        if check is None:
            if self.record_def(nsid) is None:
                raise LexiconNotFound(nsid, "record type")
            compiler = self._json_compilers.get(key)
            if compiler is None:
                from .fromjson import JsonCompiler

                compiler = self._json_compilers[key] = JsonCompiler(
                    self._defs, Options(strict=strict), raw_blob_refs=raw_blob_refs
                )
            check = table[nsid] = compiler.named(f"{nsid}#main")
        try:
            return check(obj)
        except Bad as bad:
            raise InvalidLexiconData(nsid, "record", bad.path, bad.rule, bad.reason) from None

    def validate_record(self, nsid: str, value: Any, *, strict: bool = True) -> None:
        """Check a record (a data-model value) against its collection's record schema.

        Raises :class:`LexiconNotFound` when ``nsid`` is not a known record type
        and :class:`InvalidLexiconData` (path and rule) when the record breaks it.
        """
        check = self._record_checks[strict].get(nsid)
        if check is None:
            if self.record_def(nsid) is None:
                raise LexiconNotFound(nsid, "record type")
            check = self._record_checks[strict][nsid] = self._compilers[strict].named(f"{nsid}#main")
        try:
            check(value)
        except Bad as bad:
            raise InvalidLexiconData(nsid, "record", bad.path, bad.rule, bad.reason) from None


def _refs(doc: LexiconDoc) -> Iterator[tuple[str, str]]:
    """Every (path, ref) of a document: refs, union members and what they hold."""
    for name, d in doc.defs.items():
        yield from _def_refs(d, f"defs/{name}")


def _def_refs(d: Def | Field | Body | Params | None, path: str) -> Iterator[tuple[str, str]]:
    if d is None:
        return
    if isinstance(d, Ref):
        yield f"{path}/ref", d.ref
    elif isinstance(d, Union):
        for i, ref in enumerate(d.refs):
            yield f"{path}/refs/{i}", ref
    elif isinstance(d, Array):
        yield from _def_refs(d.items, f"{path}/items")
    elif isinstance(d, Object | Params):
        for key, f in d.properties.items():
            yield from _def_refs(f, f"{path}/properties/{key}")
    elif isinstance(d, Record):
        yield from _def_refs(d.record, f"{path}/record")
    elif isinstance(d, Body):
        yield from _def_refs(d.schema, f"{path}/schema")
    elif isinstance(d, Query):
        yield from _def_refs(d.parameters, f"{path}/parameters")
        yield from _def_refs(d.output, f"{path}/output")
    elif isinstance(d, Procedure):
        yield from _def_refs(d.parameters, f"{path}/parameters")
        yield from _def_refs(d.input, f"{path}/input")
        yield from _def_refs(d.output, f"{path}/output")
    elif isinstance(d, Subscription):
        yield from _def_refs(d.parameters, f"{path}/parameters")
        yield from _def_refs(d.message, f"{path}/message/schema")
