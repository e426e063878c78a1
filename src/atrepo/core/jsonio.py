"""Parsing JSON that came from outside: one place, typed errors only.

``json.loads`` fails in several ways that are not ``AtrepoError``: ``ValueError``
for bad syntax, ``UnicodeDecodeError`` for bad bytes, and ``RecursionError`` for
deep nesting (the C scanner recurses per level). A caller that forgets one lets
a hostile server or client turn a rejection into a traceback, so every parse of
outside JSON goes through :func:`parse_outside_json`, which maps all of them to
the caller's error type.

Accepted JSON is also held to what the rest of atrepo can handle: UTF-8 only
(no encoding guessing), no ``NaN``/``Infinity`` (not JSON, and not re-emittable
as JSON), and nesting no deeper than ``max_depth``, so a value that parsed
cannot make a later walk or ``json.dumps`` recurse too deep either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from . import limits
from .errors import AtrepoError

__all__ = ["json_depth_exceeds", "parse_outside_json"]

#: Characters of a JSON error message's own text kept (``json`` quotes input).
_MAX_DETAIL = 200


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than ``max_depth`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            children = item.values()
        elif kind is list:
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        deeper = depth + 1
        for child in children:
            if type(child) is dict or type(child) is list:
                push((child, deeper))
    return False


def parse_outside_json(
    data: str | bytes,
    error: Callable[[str], AtrepoError],
    *,
    max_bytes: int | None = None,
    max_depth: int = limits.MAX_CBOR_DEPTH,
) -> Any:
    """Parse JSON from outside; every failure becomes ``error(reason)``.

    ``error`` builds the caller's typed error from a short reason (say
    ``lambda why: ResolutionError(f"{did}: audit log: {why}")``), so the caller
    keeps naming what was being parsed.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"JSON is {len(data)} bytes, more than {max_bytes}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise error(f"JSON nested too deeply (more than {max_depth} levels)") from None
    except ValueError as exc:  # includes UnicodeDecodeError and json.JSONDecodeError
        kind = "not UTF-8 JSON" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        raise error(f"{kind}: {str(exc)[:_MAX_DETAIL]}") from None
    if json_depth_exceeds(value, max_depth):
        raise error(f"JSON nested too deeply (more than {max_depth} levels)")
    return value
