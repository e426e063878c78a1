"""XRPC calls checked against their lexicons: parameters, bodies, outputs, messages.

A server declares each route by NSID and gets an :class:`Endpoint`, compiled
once: ``parse_params`` turns query-string pairs into typed, defaulted and
validated values; ``parse_input`` checks a procedure body's presence,
``Content-Type`` and (for JSON) its schema, and applies defaults;
``check_output`` and ``check_message`` check what a server sends (in tests,
and for subscription frames). Every failure is :class:`InvalidRequest` (400)
naming the parameter or the path inside the body; an oversized JSON body is
:class:`PayloadTooLarge` (413).

Rules follow the reference ``xrpc-server`` (spec digest: lexicon.md section 8),
stricter where it was loose: integers must be all digits (no ``parseInt``
prefix reading), booleans exactly ``true``/``false``, a scalar parameter given
twice is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .. import datamodel, limits
from ..errors import AtrepoError, InvalidLexiconData, InvalidRequest, LexiconNotFound, PayloadTooLarge
from .compile import Bad, Check, blob_accepts, type_name
from .registry import Registry
from .schema import Array, Body, Boolean, Field, Integer, Params, Procedure, Query, String, Subscription

__all__ = ["JSON_BODY_LIMIT", "Endpoint", "endpoint"]

#: Default limit of a JSON request body (the reference's 150 KiB); routes may raise it.
JSON_BODY_LIMIT = 150 * 1024

_INTEGER = re.compile(r"-?[0-9]{1,19}")


def endpoint(registry: Registry, nsid: str) -> Endpoint:
    """The compiled endpoint of a query, procedure or subscription lexicon."""
    d = registry.get_def(nsid)
    if not isinstance(d, Query | Procedure | Subscription):
        raise LexiconNotFound(nsid, "XRPC method")
    return Endpoint(registry, nsid, d)


class Endpoint:
    """One XRPC method, its parameter parser and body validators compiled once."""

    def __init__(self, registry: Registry, nsid: str, schema: Query | Procedure | Subscription) -> None:
        self.nsid = nsid
        self.schema = schema
        self.kind: Literal["query", "procedure", "subscription"] = (
            "query"
            if isinstance(schema, Query)
            else "procedure"
            if isinstance(schema, Procedure)
            else "subscription"
        )
        self.errors = schema.errors
        self.input: Body | None = schema.input if isinstance(schema, Procedure) else None
        self.output: Body | None = schema.output if isinstance(schema, Query | Procedure) else None
        compiler = registry.compiler(strict=True)
        self._params = _ParamsParser(nsid, schema.parameters, compiler.field) if schema.parameters else None
        self._input_check, self._input_fill = self._body_checks(registry, self.input)
        self._output_check, _ = self._body_checks(registry, self.output)
        self._messages: dict[str, Check] = {}
        self._open_messages = True
        if isinstance(schema, Subscription) and schema.message is not None:
            self._open_messages = not schema.message.closed
            for ref in schema.message.refs:
                # A frame's header names its type: "#name" for a def of this
                # lexicon, the full "nsid#name" otherwise; the body has no $type.
                ref_nsid, _, name = ref.partition("#")
                key = f"#{name}" if ref_nsid == nsid else type_name(ref)
                self._messages[key] = compiler.named(ref)

    @staticmethod
    def _body_checks(
        registry: Registry, body: Body | None
    ) -> tuple[Check | None, Callable[[Any], Any] | None]:
        if body is None or body.schema is None:
            return None, None
        compiler = registry.compiler(strict=True)
        return compiler.field(body.schema), compiler.filler(body.schema)

    @property
    def http_method(self) -> str:
        return "POST" if self.kind == "procedure" else "GET"

    # --- parameters ------------------------------------------------------------------

    def parse_params(
        self, query: Iterable[tuple[str, str]] | Mapping[str, str | Sequence[str]]
    ) -> dict[str, Any]:
        """Query-string pairs (repeats allowed) -> typed, defaulted, validated parameters."""
        grouped: dict[str, list[str]] = {}
        pairs = query.items() if isinstance(query, Mapping) else query
        for key, value in pairs:
            values = [value] if isinstance(value, str) else list(value)
            grouped.setdefault(key, []).extend(v for v in values if v != "")
        if self._params is None:
            return {}
        return self._params.parse(grouped)

    # --- bodies ----------------------------------------------------------------------

    def parse_input(
        self, content_type: str | None, body: bytes | None, *, max_json_bytes: int = JSON_BODY_LIMIT
    ) -> Any:
        """Check a request body; JSON comes back as a validated data-model value with defaults.

        ``body`` is ``None`` (or empty) when the request had none. Other
        encodings come back as the bytes given (their handlers read them).
        """
        if not body:
            if self.input is not None:
                raise InvalidRequest("A request body is expected but none was provided", rule="body")
            return None
        if self.input is None:
            raise InvalidRequest("A request body was provided when none was expected", rule="body")
        if not content_type:
            raise InvalidRequest("Request encoding (Content-Type) required but not provided", rule="encoding")
        mime = content_type.split(";", 1)[0].strip().lower()
        if not blob_accepts((self.input.encoding,), mime):
            raise InvalidRequest(f"Wrong request encoding (Content-Type): {mime[:100]}", rule="encoding")
        if self.input.encoding != "application/json":  # */* routes get bytes, even for a JSON upload
            return body
        if len(body) > max_json_bytes:
            raise PayloadTooLarge(f"request entity too large: {len(body)} bytes, more than {max_json_bytes}")
        try:
            value = datamodel.parse_json(body, max_bytes=max_json_bytes)
        except AtrepoError as exc:
            raise InvalidRequest(f"Invalid {self.nsid} input: {exc}", rule="json") from None
        if self._input_fill is not None:  # defaults first, as the reference: a required field may have one
            value = self._input_fill(value)
        if self._input_check is not None:
            try:
                self._input_check(value)
            except Bad as bad:
                raise InvalidRequest(
                    _message(self.nsid, "input", bad), path=bad.path, rule=bad.rule
                ) from None
        return value

    def check_output(self, value: Any) -> None:
        """Check a JSON response body (a data-model value) against the output schema."""
        if self._output_check is None:
            return
        try:
            self._output_check(value)
        except Bad as bad:
            raise InvalidLexiconData(self.nsid, "output", bad.path, bad.rule, bad.reason) from None

    def check_message(self, type_: str, body: Any) -> bool:
        """Check one subscription message by its frame type (``#commit``).

        Returns ``False`` for a type the lexicon doesn't list (an open union:
        consumers skip it), ``True`` once a listed type's body is valid.
        """
        if self.kind != "subscription":
            raise LexiconNotFound(self.nsid, "subscription")
        check = self._messages.get(type_)
        if check is None:
            if self._open_messages:
                return False
            raise InvalidLexiconData(
                self.nsid, "message", "", "closed-union", f"unknown message type {type_[:100]!r}"
            )
        try:
            check(body)
        except Bad as bad:
            raise InvalidLexiconData(self.nsid, f"{type_} message", bad.path, bad.rule, bad.reason) from None
        return True


def _message(nsid: str, what: str, bad: Bad) -> str:
    where = f" at {bad.path}" if bad.parts else ""
    return f"Invalid {nsid} {what}{where}: {bad.reason}"


class _ParamsParser:
    """Strings in, typed values out, one compiled coercion and check per parameter."""

    def __init__(self, nsid: str, params: Params, compile_field: Callable[[Field], Check]) -> None:
        self.nsid = nsid
        self.required = params.required
        self.specs: list[tuple[str, Callable[[str], Any], bool, Any, Check]] = []
        for name, f in params.properties.items():
            is_array = isinstance(f, Array)
            scalar = f.items if isinstance(f, Array) else f
            default = getattr(f, "default", None)
            self.specs.append((name, _coercion(scalar), is_array, default, compile_field(f)))

    def parse(self, grouped: dict[str, list[str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, coerce, is_array, default, check in self.specs:
            raw = grouped.get(name)
            try:
                if not raw:
                    if default is not None:
                        out[name] = default
                    elif name in self.required:
                        raise Bad("required", "missing required parameter")
                    continue
                if is_array:
                    value: Any = [coerce(v) for v in raw]
                else:
                    if len(raw) > 1:
                        raise Bad("repeated", f"given {len(raw)} times; it takes one value")
                    value = coerce(raw[0])
                check(value)
            except Bad as bad:
                raise InvalidRequest(
                    f"Invalid {self.nsid} params: {name}: {bad.reason}", path=name, rule=bad.rule
                ) from None
            out[name] = value
        return out


def _coercion(f: Field) -> Callable[[str], Any]:
    if isinstance(f, Integer):
        return _to_int
    if isinstance(f, Boolean):
        return _to_bool
    if isinstance(f, String):
        return _to_str
    raise TypeError(f"not a parameter type: {type(f).__name__}")  # documents are checked at load


def _to_int(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise Bad("type", f"expected an integer, got {text[:40]!r}")
    value = int(text)
    if not -limits.MAX_SAFE_INT <= value <= limits.MAX_SAFE_INT:
        raise Bad("range", f"integer {text} outside the safe range")
    return value


def _to_bool(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise Bad("type", f"expected true or false, got {text[:40]!r}")


def _to_str(text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Bad("type", "string is not valid Unicode (lone surrogate)") from None
    return text
