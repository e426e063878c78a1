"""Lexicon schemas compiled into validators: closures built once per def.

Validating a record is a hot path (every write on a host, every record of a
mirror), so a schema is not interpreted per value. Each def becomes a closure
that holds its constraints in local variables and calls its children's
closures directly; a check that cannot fail for a schema (no ``maxLength``, no
``format``) is simply absent from its closure.

Values are data-model values (what ``cbor.decode`` or ``datamodel.json_to_value``
return): the data-model rules themselves (no floats, valid UTF-8, link and
bytes shapes) were checked where the value entered.

Failures travel as ``_Bad`` (rule, reason) and collect their path on the way out
(each container appends its key or index), so a path is built only for the one
value that failed, never for the values that pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .. import limits, syntax
from ..cid import CID
from ..errors import InvalidSyntax
from .graphemes import count_graphemes, graphemes_at_most
from .schema import (
    Array,
    Blob,
    Boolean,
    Bytes,
    CidLink,
    Def,
    Field,
    Integer,
    Object,
    Params,
    Record,
    Ref,
    String,
    Union,
    Unknown,
)

__all__ = ["FORMATS", "Bad", "Check", "Compiler", "Options", "blob_accepts", "type_name"]

Check = Callable[[Any], Any]


class Bad(Exception):
    """A value failed ``rule``; ``parts`` is its path, innermost first."""

    __slots__ = ("parts", "reason", "rule")

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason
        self.parts: list[str] = []

    @property
    def path(self) -> str:
        return "/".join(reversed(self.parts))


class Options:
    """How strict a compiled validator is.

    ``strict`` (the write path, and the default): integers within the JavaScript
    safe range as the reference host requires, the strict datetime grammar, no
    legacy blobs. Not strict (reading old network data): any signed 64-bit
    integer, datetimes any ISO 8601 parser reads, legacy ``{cid, mimeType}`` blobs.
    """

    __slots__ = ("strict",)

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict


_SHOWN = 60


def _shown(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return (
            repr(value) if len(value) <= _SHOWN else repr(value[:_SHOWN]) + f"... ({len(value)} characters)"
        )
    if kind is int:
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if value is None or kind is bool:
        return "null" if value is None else str(value).lower()
    return _kind(value)


def _kind(value: Any) -> str:
    kind = type(value)
    if value is None:
        return "null"
    if kind is dict:
        return "blob" if value.get("$type") == "blob" else "object"
    return {
        str: "string",
        int: "integer",
        bool: "boolean",
        list: "array",
        bytes: "bytes",
        CID: "cid-link",
    }.get(kind, kind.__name__)


def _wrong_type(expected: str, value: Any) -> Bad:
    return Bad("type", f"expected {expected}, got {_kind(value)}")


def _one_of(values: Sequence[Any]) -> str:
    shown: list[str] = []
    size = 0
    for v in values[:10]:
        text = _shown(v)
        size += len(text) + 2
        if shown and size > 160:  # a hostile lexicon's long values: keep the message short
            break
        shown.append(text)
    return ", ".join(shown) + (f" ... ({len(values)} values)" if len(shown) < len(values) else "")


def type_name(full: str) -> str:
    """The ``$type`` of a def: the bare NSID for ``main``, ``nsid#name`` otherwise."""
    return full[:-5] if full.endswith("#main") else full


# --- formats --------------------------------------------------------------------


def _lenient_datetime(value: object) -> bool:
    if syntax.is_valid_datetime(value):
        return True
    if type(value) is not str or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


#: Lexicon string formats and their predicates (our syntax validators).
FORMATS: Mapping[str, Callable[[object], bool]] = {
    "at-identifier": syntax.is_valid_at_identifier,
    "at-uri": syntax.is_valid_at_uri,
    "cid": syntax.is_valid_cid_string,
    "datetime": syntax.is_valid_datetime,
    "did": syntax.is_valid_did,
    "handle": syntax.is_valid_handle,
    "language": syntax.is_valid_language,
    "nsid": syntax.is_valid_nsid,
    "record-key": syntax.is_valid_record_key,
    "tid": syntax.is_valid_tid,
    "uri": syntax.is_valid_uri,
}


def _format_failure(fmt: str, value: str) -> Bad:
    try:
        syntax.validate(fmt, value)
    except InvalidSyntax as exc:
        return Bad("format", f"invalid {fmt} {_shown(value)}: {exc.rule}")
    return Bad("format", f"invalid {fmt} {_shown(value)}")


# --- scalar checkers (need no registry) ----------------------------------------


def boolean_checker(s: Boolean) -> Check:
    const = s.const

    def check(v: Any) -> None:
        if type(v) is not bool:
            raise _wrong_type("a boolean", v)
        if const is not None and v is not const:
            raise Bad("const", f"must be {str(const).lower()}")

    return check


def integer_checker(s: Integer, options: Options) -> Check:
    bound = limits.MAX_SAFE_INT if options.strict else limits.MAX_INT
    lo = -bound if options.strict else limits.MIN_INT
    hi = bound
    lo = max(lo, s.minimum) if s.minimum is not None else lo
    hi = min(hi, s.maximum) if s.maximum is not None else hi
    enum = frozenset(s.enum) if s.enum is not None else None
    enum_list = s.enum or ()
    const = s.const

    def check(v: Any) -> None:
        if type(v) is not int:
            raise _wrong_type("an integer", v)
        if v < lo:
            rule = "minimum" if s.minimum is not None and v < s.minimum else "range"
            raise Bad(rule, f"integer too small (minimum {lo}, got {_shown(v)})")
        if v > hi:
            rule = "maximum" if s.maximum is not None and v > s.maximum else "range"
            raise Bad(rule, f"integer too big (maximum {hi}, got {_shown(v)})")
        if const is not None and v != const:
            raise Bad("const", f"must be {const} (got {v})")
        if enum is not None and v not in enum:
            raise Bad("enum", f"expected one of {_one_of(enum_list)} (got {v})")

    return check


def string_checker(s: String, options: Options) -> Check:
    fmt_name = s.format
    fmt = FORMATS[fmt_name] if fmt_name is not None else None
    if fmt_name == "datetime" and not options.strict:
        fmt = _lenient_datetime
    min_b, max_b = s.min_length, s.max_length
    min_g, max_g = s.min_graphemes, s.max_graphemes
    enum = frozenset(s.enum) if s.enum is not None else None
    enum_list = s.enum or ()
    const = s.const
    lengths = min_b is not None or max_b is not None
    graphemes = min_g is not None or max_g is not None

    if not (lengths or graphemes or enum is not None or const is not None):
        if fmt is None:

            def plain(v: Any) -> None:
                if type(v) is not str:
                    raise _wrong_type("a string", v)

            return plain

        def formatted(v: Any) -> None:
            if type(v) is not str:
                raise _wrong_type("a string", v)
            if not fmt(v):
                raise _format_failure(fmt_name or "", v)

        return formatted

    def check(v: Any) -> None:
        if type(v) is not str:
            raise _wrong_type("a string", v)
        if const is not None and v != const:
            raise Bad("const", f"must be {_shown(const)} (got {_shown(v)})")
        if enum is not None and v not in enum:
            raise Bad("enum", f"expected one of {_one_of(enum_list)} (got {_shown(v)})")
        if lengths:
            n = len(v) if v.isascii() else len(v.encode("utf-8"))
            if max_b is not None and n > max_b:
                raise Bad("maxLength", f"string too long (maximum {max_b} bytes, got {n})")
            if min_b is not None and n < min_b:
                raise Bad("minLength", f"string too short (minimum {min_b} bytes, got {n})")
        if graphemes:
            if max_g is not None:
                over = graphemes_at_most(v, max_g)
                if over is not None:
                    raise Bad("maxGraphemes", f"string too long (maximum {max_g} graphemes, got {over})")
            if min_g is not None and (len(v) < min_g or count_graphemes(v) < min_g):
                got = count_graphemes(v)
                raise Bad("minGraphemes", f"string too short (minimum {min_g} graphemes, got {got})")
        if fmt is not None and not fmt(v):
            raise _format_failure(fmt_name or "", v)

    return check


def bytes_checker(s: Bytes) -> Check:
    min_b, max_b = s.min_length, s.max_length

    def check(v: Any) -> None:
        if type(v) is not bytes:
            raise _wrong_type("bytes", v)
        n = len(v)
        if max_b is not None and n > max_b:
            raise Bad("maxLength", f"bytes too long (maximum {max_b}, got {n})")
        if min_b is not None and n < min_b:
            raise Bad("minLength", f"bytes too short (minimum {min_b}, got {n})")

    return check


def _cid_link(v: Any) -> None:
    if type(v) is not CID:
        raise _wrong_type("a cid-link", v)


def blob_accepts(patterns: Sequence[str], mime: str) -> bool:
    """Does a blob ``accept`` list admit ``mime``? ``*/*``, ``type/*`` or exact."""
    for pattern in patterns:
        if pattern in ("*/*", mime):
            return True
        if pattern.endswith("/*") and mime.startswith(pattern[:-1]):
            return True
    return False


_BLOB_KEYS = frozenset({"$type", "ref", "mimeType", "size"})
_LEGACY_BLOB_KEYS = frozenset({"cid", "mimeType"})


def blob_checker(s: Blob, options: Options) -> Check:
    accept = s.accept
    max_size = s.max_size
    legacy_ok = not options.strict

    def check(v: Any) -> None:
        if type(v) is not dict:
            raise _wrong_type("a blob", v)
        if v.get("$type") == "blob":
            if v.keys() != _BLOB_KEYS:
                raise Bad("blob", "a blob has exactly the keys $type, ref, mimeType and size")
            mime, size = v["mimeType"], v["size"]
            if type(v["ref"]) is not CID:
                raise Bad("blob", f"blob ref must be a cid-link, not {_kind(v['ref'])}")
            if type(size) is not int or size < 0:
                raise Bad("blob", f"blob size must be a non-negative integer, not {_shown(size)}")
        elif legacy_ok and v.keys() == _LEGACY_BLOB_KEYS and type(v["cid"]) is str:
            if not syntax.is_valid_cid_string(v["cid"]):
                raise Bad("blob", f"legacy blob cid {_shown(v['cid'])} is not a CID")
            mime, size = v["mimeType"], None
        else:
            raise Bad("type", "expected a blob (an object with $type blob)")
        if type(mime) is not str or "/" not in mime:
            raise Bad("blob", f"blob mimeType must be a MIME type, not {_shown(mime)}")
        if accept is not None and not blob_accepts(accept, mime):
            raise Bad("accept", f"blob mimeType {_shown(mime)} is not accepted ({_one_of(accept)})")
        if max_size is not None:
            if size is None:
                raise Bad("maxSize", "a legacy blob has no size, so it cannot meet maxSize")
            if size > max_size:
                raise Bad("maxSize", f"blob too big (maximum {max_size} bytes, got {size})")

    return check


def _unknown(v: Any) -> None:
    if type(v) is not dict:
        raise _wrong_type("an object", v)
    if v.get("$type") == "blob":
        raise Bad("type", "expected an object, got a blob")


def scalar_checker(s: Field, options: Options) -> Check | None:
    """The checker of a type that needs no registry, or ``None``."""
    if isinstance(s, String):
        return string_checker(s, options)
    if isinstance(s, Integer):
        return integer_checker(s, options)
    if isinstance(s, Boolean):
        return boolean_checker(s)
    if isinstance(s, Bytes):
        return bytes_checker(s)
    if isinstance(s, CidLink):
        return _cid_link
    if isinstance(s, Blob):
        return blob_checker(s, options)
    if isinstance(s, Unknown):
        return _unknown
    return None


# --- object code generation -------------------------------------------------------
#
# An object's checker is generated Python: one straight-line block per property
# (``v.get`` then a guard), so the common fields cost an inline test rather than
# a call. A guard only ever *accepts*: when it fails, the field's full checker
# runs and raises the exact rule (or accepts, if the guard was merely cautious).

_MISSING = object()


def _type_mismatch(t: Any, name: str, required: bool) -> None:
    if t is None and required:
        bad = Bad("required", f"missing $type (must be {_shown(name)})")
    else:
        bad = Bad("$type", f"$type must be {_shown(name)}, got {_shown(t)}")
    bad.parts.append("$type")
    raise bad


def _missing_field(v: dict[str, Any], required: Sequence[str]) -> None:
    for key in required:
        if key not in v:
            bad = Bad("required", f"missing required field {key!r}")
            bad.parts.append(key)
            raise bad


def _null_here(key: str) -> None:
    bad = Bad("nullable", "null is not allowed here")
    bad.parts.append(key)
    raise bad


def _guard(f: Field, i: int, ns: dict[str, Any], options: Options) -> str | None:
    """A Python expression over ``x`` that is true only for values ``f`` accepts."""
    if isinstance(f, String):
        if f.enum is not None or f.const is not None or f.min_length or f.min_graphemes:
            return None
        limits_ = [
            n for n in (f.max_graphemes, None if f.max_length is None else f.max_length // 4) if n is not None
        ]
        test = "type(x) is str"
        if limits_:
            test += f" and len(x) <= {min(limits_)}"
        if f.format is not None:
            ns[f"f{i}"] = (
                _lenient_datetime if f.format == "datetime" and not options.strict else FORMATS[f.format]
            )
            test += f" and f{i}(x)"
        return test
    if isinstance(f, Integer):
        if f.enum is not None or f.const is not None:
            return None
        bound = limits.MAX_SAFE_INT if options.strict else limits.MAX_INT
        lo = (
            max(f.minimum, -bound)
            if f.minimum is not None
            else (-bound if options.strict else limits.MIN_INT)
        )
        hi = min(f.maximum, bound) if f.maximum is not None else bound
        return f"type(x) is int and {lo} <= x <= {hi}"
    if isinstance(f, Boolean):
        return "type(x) is bool" if f.const is None else None
    if isinstance(f, CidLink):
        return "type(x) is CID"
    return None


# --- the compiler ---------------------------------------------------------------


def _same(v: Any) -> Any:
    return v


def _type_string_ok(t: str) -> bool:
    nsid, hash_, name = t.partition("#")
    return syntax.is_valid_nsid(nsid) and (not hash_ or name not in ("", "main")) and "#" not in name


def _at_type(rule: str, reason: str) -> Bad:
    bad = Bad(rule, reason)
    bad.parts.append("$type")
    return bad


def _untyped_member() -> Bad:
    """A union member whose ``$type`` is missing or not a string."""
    return _at_type("$type", "a union member needs a $type")


def _check_unlisted_member(t: str, closed: bool, listed: Sequence[str]) -> None:
    """A union member whose ``$type`` the union doesn't list: refused when closed or malformed."""
    if closed:
        raise _at_type("closed-union", f"$type {_shown(t)} is not one of {_one_of(listed)}")
    if not _type_string_ok(t):
        raise _at_type("$type", f"$type {_shown(t)} is not an NSID or nsid#name (no #main)")


def _check_item_count(n: int, min_n: int | None, max_n: int | None) -> None:
    """An array's ``maxLength``/``minLength`` (counted in items)."""
    if max_n is not None and n > max_n:
        raise Bad("maxLength", f"array too long (maximum {max_n} items, got {n})")
    if min_n is not None and n < min_n:
        raise Bad("minLength", f"array too short (minimum {min_n} items, got {n})")


def object_prelude(
    s: Object, name: str | None, required_type: bool, shown: str
) -> tuple[dict[str, Any], list[str]]:
    """The namespace and first lines of a generated object checker named ``check``.

    The type test, the ``$type`` rule of named objects and the required keys;
    ``shown`` is the expression reported as the wrong value (JSON form converts
    it first). Both compilers then add one block per property.
    """
    ns: dict[str, Any] = {
        "Bad": Bad,
        "MISSING": _MISSING,
        "wrong_type": _wrong_type,
        "type_mismatch": _type_mismatch,
        "missing": _missing_field,
        "null_here": _null_here,
        "name": name,
        "required": s.required,
        "CID": CID,
    }
    lines = [
        "def check(v):",
        "    if type(v) is not dict:",
        f"        raise wrong_type('an object', {shown})",
    ]
    if name is not None:
        lines += ["    t = v.get('$type')", "    if t != name:"]
        if required_type:
            lines.append("        type_mismatch(t, name, True)")
        else:
            lines += ["        if t is not None:", "            type_mismatch(t, name, False)"]
    if s.required:
        ns.update({f"r{i}": key for i, key in enumerate(s.required)})
        test = " or ".join(f"r{i} not in v" for i in range(len(s.required)))
        lines += [f"    if {test}:", "        missing(v, required)"]
    return ns, lines


class Compiler:
    """Compiles the defs of a registry (by full name ``nsid#name``) into checkers, once each.

    Recursive schemas (a thread view that holds thread views) compile through a
    one-cell trampoline for the def still being built; everything else calls its
    children's closures directly.
    """

    def __init__(self, defs: Mapping[str, Def], options: Options) -> None:
        self._defs = defs
        self.options = options
        self._done: dict[str, Check] = {}
        self._busy: set[str] = set()
        self._cells: dict[str, list[Check]] = {}
        # Compiling from two threads at once must not hand one a half-built trampoline.
        self._lock = threading.RLock()
        self._fill_done: dict[str, Callable[[Any], Any]] = {}
        self._fill_busy: set[str] = set()
        self._fill_cells: dict[str, list[Callable[[Any], Any]]] = {}

    def named(self, full: str) -> Check:
        """The checker of the def ``nsid#name``, compiled on first use."""
        done = self._done.get(full)
        if done is not None:
            return done
        with self._lock:  # re-entrant: compiling a def compiles what it refers to
            return self._compile_named(full)

    def _compile_named(self, full: str) -> Check:
        done = self._done.get(full)
        if done is not None:
            return done
        if full in self._busy:
            cell = self._cells.setdefault(full, [])

            def trampoline(v: Any) -> Any:
                return cell[0](v)

            return trampoline
        self._busy.add(full)
        try:
            check = self._compile_def(full, self._defs[full])
        finally:
            self._busy.discard(full)
        self._done[full] = check
        if full in self._cells:
            self._cells[full].append(check)
        return check

    def _compile_def(self, full: str, d: Def) -> Check:
        if isinstance(d, Record):
            return self.object(d.record, type_name(full), required_type=True)
        if isinstance(d, Object):
            return self.object(d, type_name(full))
        return self.field(d)  # type: ignore[arg-type]  # token/primary types never reach here

    def field(self, f: Field) -> Check:
        scalar = scalar_checker(f, self.options)
        if scalar is not None:
            return scalar
        if isinstance(f, Ref):
            return self.named(f.ref)
        if isinstance(f, Union):
            return self.union(f)
        if isinstance(f, Array):
            return self.array(f)
        if isinstance(f, Object):
            return self.object(f, None)
        raise TypeError(f"not a field type: {type(f).__name__}")

    def array(self, s: Array) -> Check:
        item = self.field(s.items)
        min_n, max_n = s.min_length, s.max_length

        def check(v: Any) -> None:
            if type(v) is not list:
                raise _wrong_type("an array", v)
            _check_item_count(len(v), min_n, max_n)
            i = 0
            try:
                for i, x in enumerate(v):  # noqa: B007  (i names the failing item)
                    item(x)
            except Bad as bad:
                bad.parts.append(str(i))
                raise

        return check

    def object(self, s: Object, name: str | None, *, required_type: bool = False) -> Check:
        """An object's checker; ``name`` is its ``$type`` when it is a named def.

        A ``$type`` on a named object must equal its name (absent is fine, except
        for records, ``required_type``); extra properties are allowed.
        """
        ns, lines = object_prelude(s, name, required_type, "v")
        for i, (key, f) in enumerate(s.properties.items()):
            ns[f"k{i}"] = key
            ns[f"c{i}"] = self.field(f)
            guard = _guard(f, i, ns, self.options)
            lines += [f"    x = v.get(k{i}, MISSING)", "    if x is not MISSING:", "        if x is None:"]
            lines.append("            pass" if key in s.nullable else f"            null_here(k{i})")
            lines.append(f"        elif not ({guard}):" if guard else "        else:")
            lines += [
                "            try:",
                f"                c{i}(x)",
                "            except Bad as bad:",
                f"                bad.parts.append(k{i})",
                "                raise",
            ]
        exec(compile("\n".join(lines), f"<lexicon object {name or 'inline'}>", "exec"), ns)
        check: Check = ns["check"]
        return check

    def union(self, s: Union) -> Check:
        table = {type_name(ref): self.named(ref) for ref in s.refs}
        closed = s.closed
        listed = tuple(table)

        def check(v: Any) -> None:
            if type(v) is not dict:
                raise _wrong_type("an object with $type (a union)", v)
            t = v.get("$type")
            if type(t) is not str:
                raise _untyped_member()
            sub = table.get(t)
            if sub is not None:
                sub(v)
                return
            _check_unlisted_member(t, closed, listed)

        return check

    # --- defaults (for XRPC bodies; records are never changed) -------------------

    def filler(self, f: Field | Params) -> Callable[[Any], Any] | None:
        """A function that returns a copy of a value with defaults applied.

        ``None`` when nothing under ``f`` declares a default, the usual case.
        Recursive defs get their fillers through the same one-cell trampoline
        as checkers, so defaults apply at every depth.
        """
        with self._lock:
            if not self._needs_fill(f, set()):
                return None
            return self._filler(f)

    def _needs_fill(self, f: Field | Params, seen: set[str]) -> bool:
        if isinstance(f, Ref | Union):
            for ref in (f.ref,) if isinstance(f, Ref) else f.refs:
                if ref not in seen:
                    seen.add(ref)
                    inner = self._fill_target(ref)
                    if inner is not None and self._needs_fill(inner, seen):
                        return True
            return False
        if isinstance(f, Array):
            return self._needs_fill(f.items, seen)
        if isinstance(f, Object | Params):
            return any(
                (isinstance(p, Boolean | Integer | String) and p.default is not None)
                or self._needs_fill(p, seen)
                for p in f.properties.values()
            )
        return False

    def _fill_target(self, ref: str) -> Object | None:
        target = self._defs[ref]
        inner = target.record if isinstance(target, Record) else target
        return inner if isinstance(inner, Object) else None

    def _named_filler(self, ref: str) -> Callable[[Any], Any]:
        done = self._fill_done.get(ref)
        if done is not None:
            return done
        if ref in self._fill_busy:
            cell = self._fill_cells.setdefault(ref, [])

            def trampoline(v: Any) -> Any:
                return cell[0](v)

            return trampoline
        inner = self._fill_target(ref)
        if inner is None or not self._needs_fill(inner, {ref}):
            fn: Callable[[Any], Any] = _same
        else:
            self._fill_busy.add(ref)
            try:
                fn = self._filler(inner) or _same
            finally:
                self._fill_busy.discard(ref)
        self._fill_done[ref] = fn
        if ref in self._fill_cells:
            self._fill_cells[ref].append(fn)
        return fn

    def _filler(self, f: Field | Params) -> Callable[[Any], Any] | None:
        if isinstance(f, Ref):
            return self._named_filler(f.ref)
        if isinstance(f, Union):
            by_type = {type_name(r): self._named_filler(r) for r in f.refs}

            def fill_union(v: Any) -> Any:
                fn = by_type.get(str(v.get("$type"))) if type(v) is dict else None
                return fn(v) if fn is not None else v

            return fill_union
        if isinstance(f, Array):
            item = self._filler(f.items)
            if item is None:
                return None
            return lambda v: [item(x) for x in v] if type(v) is list else v
        if isinstance(f, Object | Params):
            defaults = {
                k: p.default
                for k, p in f.properties.items()
                if isinstance(p, Boolean | Integer | String) and p.default is not None
            }
            nested = {
                k: fn
                for k, p in f.properties.items()
                if self._needs_fill(p, set()) and (fn := self._filler(p)) is not None
            }
            if not defaults and not nested:
                return None

            def fill_object(v: Any) -> Any:
                if type(v) is not dict:
                    return v
                out = dict(v)
                for k, d in defaults.items():
                    if k not in out:
                        out[k] = d
                for k, fn in nested.items():
                    if out.get(k) is not None:
                        out[k] = fn(out[k])
                return out

            return fill_object
        return None
