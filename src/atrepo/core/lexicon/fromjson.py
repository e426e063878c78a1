"""Validating a record in its JSON form and converting it to the data model, in one pass.

A host receives records as JSON (``{"$link": ...}`` for CIDs, ``{"$bytes": ...}``
for bytes). The two-step path converts the whole value (``datamodel.json_to_value``,
a full copy) and then validates it. Here each compiled converter validates its
part and returns the data-model value, copying only what changes: a field that
is a string or an integer comes back as the very object given, so a record with
no links, bytes or blobs (most likes, follows and posts) is validated with no
allocation at all. Only blobs, cid-links, bytes, ``unknown`` values and
properties the schema doesn't declare are converted, the last two by the
generic ``json_to_value``.

The result equals ``json_to_value`` followed by validation (a property test
compares them), with one documented difference: nesting depth is bounded
below each schema-declared position (``unknown`` data and undeclared
properties, 64 levels each) rather than from the top; the schema-declared part
of a record is finite, and ``cbor.encode`` enforces the overall limit when the
record is stored.
"""

from __future__ import annotations

from typing import Any

from .. import datamodel, limits
from ..errors import InvalidDataModel
from .compile import (
    Bad,
    Check,
    Compiler,
    _check_item_count,
    _check_unlisted_member,
    _guard,
    _shown,
    _untyped_member,
    _wrong_type,
    object_prelude,
    scalar_checker,
    type_name,
)
from .schema import Array, Blob, Boolean, Bytes, CidLink, Field, Integer, Object, String, Union, Unknown

__all__ = ["JsonCompiler"]


def _data_model(exc: InvalidDataModel) -> Bad:
    return Bad("data-model", str(exc))


def _no_surrogates(v: str) -> None:
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise Bad("data-model", "string is not valid Unicode (lone surrogate)") from None


class JsonCompiler(Compiler):
    """A :class:`Compiler` whose checkers take JSON-form values and return data-model values."""

    def __init__(self, *args: Any, raw_blob_refs: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_blob_refs = raw_blob_refs

    # --- leaves ------------------------------------------------------------------------

    def _generic(self, v: Any) -> Any:
        try:
            return datamodel.json_to_value(v, top_level_object=False, raw_blob_refs=self.raw_blob_refs)
        except InvalidDataModel as exc:
            raise _data_model(exc) from None

    def _scalar(self, f: Field) -> Check:
        check = scalar_checker(f, self.options)
        if check is None:
            raise TypeError(f"not a scalar type: {type(f).__name__}")
        return check

    def field(self, f: Field) -> Check:
        if isinstance(f, String):
            check = self._scalar(f)

            def string(v: Any) -> Any:
                check(v)
                _no_surrogates(v)
                return v

            return string
        if isinstance(f, Integer):
            check = self._scalar(f)

            def integer(v: Any) -> Any:
                if type(v) is float:
                    if not (v.is_integer() and abs(v) <= limits.MAX_SAFE_INT):
                        raise Bad("data-model", f"floats are not allowed in the AT data model ({v!r})")
                    v = int(v)
                check(v)
                return v

            return integer
        if isinstance(f, Boolean):
            check = self._scalar(f)

            def boolean(v: Any) -> Any:
                check(v)
                return v

            return boolean
        if isinstance(f, CidLink):
            return self._cid_link
        if isinstance(f, Bytes):
            return self._bytes(f)
        if isinstance(f, Blob):
            return self._blob(f)
        if isinstance(f, Unknown):
            return self._unknown
        return super().field(f)

    def _cid_link(self, v: Any) -> Any:
        if type(v) is not dict or "$link" not in v:
            # what json_to_value would make of it, for the message
            raise _wrong_type("a cid-link", self._generic(v))
        try:
            return datamodel.link_from_json(v)
        except InvalidDataModel as exc:
            raise _data_model(exc) from None

    def _bytes(self, f: Bytes) -> Check:
        check = self._scalar(f)

        def conv(v: Any) -> Any:
            if type(v) is not dict or "$bytes" not in v:
                raise _wrong_type("bytes", self._generic(v))
            try:
                out = datamodel.bytes_from_json(v)
            except InvalidDataModel as exc:
                raise _data_model(exc) from None
            check(out)
            return out

        return conv

    def _blob(self, f: Blob) -> Check:
        check = self._scalar(f)

        def conv(v: Any) -> Any:
            out = self._generic(v)  # converts the ref and applies the data model's blob rule
            check(out)
            return out

        return conv

    def _unknown(self, v: Any) -> Any:
        out = self._generic(v)
        if type(out) is not dict:
            raise _wrong_type("an object", out)
        if out.get("$type") == "blob":
            raise Bad("type", "expected an object, got a blob")
        return out

    # --- containers ------------------------------------------------------------------

    def array(self, s: Array) -> Check:
        item = self.field(s.items)
        min_n, max_n = s.min_length, s.max_length

        def conv(v: Any) -> Any:
            if type(v) is not list:
                raise _wrong_type("an array", self._generic(v))
            _check_item_count(len(v), min_n, max_n)
            out = None
            for i, x in enumerate(v):
                try:
                    y = item(x)
                except Bad as bad:
                    bad.parts.append(str(i))
                    raise
                if y is not x:
                    if out is None:
                        out = list(v)
                    out[i] = y
            return v if out is None else out

        return conv

    def object(self, s: Object, name: str | None, *, required_type: bool = False) -> Check:
        """Generated like :meth:`Compiler.object`, plus copy-on-write and undeclared keys."""
        ns, lines = object_prelude(s, name, required_type, "generic(v)")
        ns["extras"] = self._extras
        ns["generic"] = self._generic
        ns["declared"] = frozenset(s.properties) | ({"$type"} if name is not None else frozenset())
        # a named object's $type was checked against its name above: it counts as declared
        lines += ["    out = None", "    n = 0" if name is None else "    n = 0 if t is None else 1"]
        for i, (key, f) in enumerate(s.properties.items()):
            ns[f"k{i}"] = key
            ns[f"c{i}"] = self.field(f)
            guard = _guard(f, i, ns, self.options)
            if guard is not None and isinstance(f, String):
                guard += " and x.isascii()"  # non-ASCII strings take the checker (surrogates)
            if isinstance(f, CidLink):
                guard = None  # JSON form is a {"$link"} object: always converted
            lines += [
                f"    x = v.get(k{i}, MISSING)",
                "    if x is not MISSING:",
                "        n += 1",
                "        if x is None:",
            ]
            lines.append("            pass" if key in s.nullable else f"            null_here(k{i})")
            lines.append(f"        elif not ({guard}):" if guard else "        else:")
            lines += [
                "            try:",
                f"                y = c{i}(x)",
                "            except Bad as bad:",
                f"                bad.parts.append(k{i})",
                "                raise",
                "            if y is not x:",
                "                if out is None:",
                "                    out = dict(v)",
                f"                out[k{i}] = y",
            ]
        lines += [
            "    if len(v) != n:",
            "        out = extras(v, out, declared)",
            "    return v if out is None else out",
        ]
        exec(compile("\n".join(lines), f"<lexicon json object {name or 'inline'}>", "exec"), ns)
        conv: Check = ns["check"]
        return conv

    def _extras(self, v: dict[Any, Any], out: dict[str, Any] | None, declared: frozenset[str]) -> Any:
        """Properties the schema doesn't declare: data-model checks and conversion only."""
        for key, x in v.items():
            if key in declared:
                continue
            if type(key) is not str:
                raise Bad("data-model", f"object key {_shown(key)} is not a string")
            try:
                _no_surrogates(key)
            except Bad as bad:
                bad.parts.append(key)
                raise
            try:
                y = self._generic(x)
            except Bad as bad:
                bad.parts.append(key)
                raise
            if y is not x:
                if out is None:
                    out = dict(v)
                out[key] = y
        result = v if out is None else out
        if "$type" in result:
            try:
                datamodel.check_typed_object(result, raw_blob_refs=self.raw_blob_refs)
            except InvalidDataModel as exc:
                raise _data_model(exc) from None
        return result

    def union(self, s: Union) -> Check:
        table = {type_name(ref): self.named(ref) for ref in s.refs}
        closed = s.closed
        listed = tuple(table)

        def conv(v: Any) -> Any:
            if type(v) is not dict:
                raise _wrong_type("an object with $type (a union)", self._generic(v))
            t = v.get("$type")
            if type(t) is not str:
                self._generic(v)  # a data-model failure takes precedence, as in the two-step path
                raise _untyped_member()
            sub = table.get(t)
            if sub is not None:
                return sub(v)
            _check_unlisted_member(t, closed, listed)
            return self._generic(v)

        return conv
