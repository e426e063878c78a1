"""The contract every target checks, and the list of targets.

Contract, per input:

* only ``AtrepoError`` subclasses escape a decoder (anything else is a crash);
* an error's message is short (at most ``MAX_MESSAGE_CHARS``) and names one
  location: hostile input must not be echoed back whole;
* bounded time and memory: enforced by the runner (a per-input time budget and
  an address-space limit), not here.

Targets add their own semantic checks (round trips, re-validation of what a
decoder accepted); a failed ``assert`` is a crash like any other.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Final, Literal, TypeVar

from atrepo.core.errors import AtrepoError

T = TypeVar("T")

#: Longest error message a decoder may produce for any input.
MAX_MESSAGE_CHARS = 600

#: Target name -> module (``fuzz/fuzz_<name>.py``).
TARGETS = (
    "cbor",
    "cid",
    "car",
    "car_index",
    "mst_node",
    "mst_native",
    "mst_invert",
    "export_walk",
    "firehose",
    "plc",
    "did_document",
    "syntax",
    "datamodel",
    "lexicon",
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


#: When a list, every checked error appends its outcome class here (the
#: mutation engine's feedback: an input with a new sequence of outcomes is kept).
OUTCOMES: list[str] | None = None
#: One location folded into another error's message, as "... at byte 3 at byte 0".
_TWO_LOCATIONS = re.compile(r"at byte \d+ at byte \d+")
_VARIABLE = re.compile(r"b[a-z2-7]{20,}|0x[0-9a-f]+|[0-9]+|'[^']*'|\"[^\"]*\"")


def check_error(exc: AtrepoError) -> None:
    """The message contract; raises AssertionError (a crash) when it is broken."""
    message = str(exc)
    if OUTCOMES is not None:
        OUTCOMES.append(f"{type(exc).__name__}:{_VARIABLE.sub('', message)[:32]}")
    assert len(message) <= MAX_MESSAGE_CHARS, f"{type(exc).__name__} message of {len(message)} chars"
    assert _TWO_LOCATIONS.search(message) is None, f"location given twice: {message[:200]!r}"


class Refused(Enum):
    """The outcome of a call that raised an ``AtrepoError`` (checked and accepted)."""

    REFUSED = "refused"


REFUSED: Final = Refused.REFUSED


def guarded(call: Callable[[], T]) -> T | Literal[Refused.REFUSED]:
    """Run ``call``; an AtrepoError is an accepted outcome: checked, and ``REFUSED`` returned."""
    try:
        return call()
    except AtrepoError as exc:
        check_error(exc)
        return REFUSED


def load(name: str) -> Callable[[bytes], None]:
    """The ``test_one_input`` of target ``name``."""
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    module = importlib.import_module(f"fuzz.fuzz_{name}")
    entry: Callable[[bytes], None] = module.test_one_input
    return entry


def corpus_dir(name: str) -> Path:
    return CORPUS / name
