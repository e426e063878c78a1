"""Lexicons: documents through ``parse_document`` and ``Registry``, records through ``validate_record``
and the one-pass ``validate_json_record``.

The first byte picks the mode, the rest is JSON:

* even: a lexicon document. It is parsed, loaded alone and beside the shipped
  set; every def it declares is compiled (strict and lenient) and run over a
  few values, sub-values of the document itself among them.
* odd: a record. It enters the data model (as a request body would), is
  validated, strict and lenient, against two collections picked by the byte
  (shipped ones and the interop catalog's ``example.lexicon.record``), and
  goes through ``prepare_record`` with each ``validate`` setting.

Contract: only ``AtrepoError`` escapes (checked by the harness), in bounded
time (enforced by the runner). Semantic checks: what strict validation accepts,
lenient accepts too; validation never changes the record; a record stored as
``valid`` validates.
"""

from __future__ import annotations

import json
from typing import Any

from atrepo.core import datamodel, limits
from atrepo.core.errors import InvalidDataModel, InvalidLexicon
from atrepo.core.jsonio import parse_outside_json
from atrepo.core.lexicon import LexiconDoc, Registry, parse_document
from atrepo.core.lexicon.records import prepare_record
from atrepo.core.lexicon.schema import Record
from atrepo.lexicons import MAX_LEXICON_FILE_BYTES, builtin_registry, registry_with

from .harness import REFUSED, ROOT, guarded

CATALOG = ROOT / "tests" / "interop" / "lexicon" / "catalog"

#: Record types a fuzzed record is checked against (two per input, by the mode byte).
COLLECTIONS = (
    "app.bsky.feed.post",
    "example.lexicon.record",
    "app.bsky.actor.profile",
    "app.bsky.feed.threadgate",
    "app.bsky.graph.starterpack",
    "app.bsky.feed.like",
    "com.atproto.lexicon.schema",
    "app.bsky.labeler.service",
)
RKEYS = ("3jzfcijpj2z2a", "self", "com.example.fooBar", "..")
#: Most sub-values of a fuzzed document run through each of its defs.
MAX_SAMPLES = 12

_registry: Registry | None = None


def _records_registry() -> Registry:
    """The shipped lexicons plus the interop catalog (built once)."""
    global _registry
    if _registry is None:
        docs = [parse_document(json.loads(p.read_bytes())) for p in sorted(CATALOG.glob("*.json"))]
        _registry = registry_with(docs)
    return _registry


def _invalid_lexicon(why: str) -> InvalidLexicon:
    return InvalidLexicon("(fuzz)", "", "json", why)


def _invalid_record(why: str) -> InvalidDataModel:
    return InvalidDataModel(f"invalid JSON: {why}")


def _samples(value: Any) -> list[Any]:
    """The value and some of its sub-values (breadth first): shapes the defs were written about."""
    out: list[Any] = [{}, [], "", 0]
    queue = [value]
    while queue and len(out) < MAX_SAMPLES:
        item = queue.pop(0)
        out.append(item)
        if type(item) is dict:
            queue.extend(item.values())
        elif type(item) is list:
            queue.extend(item)
    return out


def _check_defs(reg: Registry, doc: LexiconDoc, samples: list[Any]) -> None:
    for name, d in doc.defs.items():
        ref = f"{doc.id}#{name}"
        for strict in (True, False):
            if guarded(lambda r=ref, s=strict: reg.validator(r, strict=s)) is REFUSED:
                break  # tokens, queries and the like hold no data
            for value in samples:
                guarded(lambda r=ref, v=value, s=strict: reg.validate(r, v, strict=s))
        if isinstance(d, Record):
            for value in samples:
                _check_record(reg, doc.id, value)


def lexicon_document(body: bytes) -> None:
    obj = guarded(
        lambda: parse_outside_json(body, _invalid_lexicon, max_bytes=MAX_LEXICON_FILE_BYTES, max_depth=64)
    )
    if obj is REFUSED:
        return
    doc = guarded(lambda: parse_document(obj))
    if doc is REFUSED:
        return
    assert parse_document(obj) == doc  # parsing is a function of the document
    value = guarded(lambda: datamodel.json_to_value(obj, top_level_object=False, raw_blob_refs=False))
    samples = _samples(value if value is not REFUSED else None)
    for build in (lambda: Registry([doc]), lambda: registry_with([doc])):
        reg = guarded(build)
        if reg is not REFUSED:
            assert doc.id in reg
            _check_defs(reg, doc, samples)


def _check_record(reg: Registry, nsid: str, value: Any) -> None:
    before = datamodel.value_to_json(value)
    strict = guarded(lambda: reg.validate_record(nsid, value))
    lenient = guarded(lambda: reg.validate_record(nsid, value, strict=False))
    assert strict is REFUSED or lenient is not REFUSED, f"strictly valid but not leniently: {nsid}"
    assert datamodel.value_to_json(value) == before, "validation changed the record"


def record(mode: int, body: bytes) -> None:
    obj = guarded(
        lambda: parse_outside_json(
            body, _invalid_record, max_bytes=limits.MAX_RECORD_JSON_BYTES, max_depth=limits.MAX_CBOR_DEPTH + 1
        )
    )
    if obj is REFUSED:
        return
    value = guarded(lambda: datamodel.json_to_value(obj, raw_blob_refs=False))
    if value is REFUSED:
        return
    reg = _records_registry()
    first = (mode >> 1) % len(COLLECTIONS)
    picked = {COLLECTIONS[first], COLLECTIONS[(first + 1 + (mode >> 4)) % len(COLLECTIONS)]}
    type_ = value.get("$type")
    if type(type_) is str and reg.record_def(type_) is not None:
        picked.add(type_)
    rkey = RKEYS[(mode >> 5) % len(RKEYS)]
    for nsid in sorted(picked):
        _check_record(reg, nsid, value)
        # the one-pass JSON path gives the same verdict and the same value
        fused = guarded(lambda n=nsid: reg.validate_json_record(n, obj, raw_blob_refs=False))
        two_step = guarded(lambda n=nsid: reg.validate_record(n, value))
        assert (fused is REFUSED) == (two_step is REFUSED), f"one-pass and two-step disagree on {nsid}"
        assert fused is REFUSED or fused == value, f"one-pass value differs for {nsid}"
        for validate in (None, True, False):
            result = guarded(lambda n=nsid, v=validate: prepare_record(reg, n, rkey, value, validate=v))
            if result is REFUSED:
                continue
            stored, status = result
            assert stored.get("$type") == nsid
            if status == "valid":
                reg.validate_record(nsid, stored)
    # the shipped registry alone gives the same answers for the shipped types
    builtin = builtin_registry()
    for nsid in sorted(n for n in picked if builtin.record_def(n) is not None):
        ours = guarded(lambda n=nsid: reg.validate_record(n, value))
        theirs = guarded(lambda n=nsid: builtin.validate_record(n, value))
        assert (ours is REFUSED) == (theirs is REFUSED), nsid


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0], data[1:]
    if mode & 1:
        record(mode, body)
    else:
        lexicon_document(body)


# Built at import, outside every input's time budget: otherwise the first input pays
# for parsing the ~300 shipped documents, which took over 2 s on a loaded CI machine.
builtin_registry()
_records_registry()
