"""Lexicon validation of a network-shaped mix of records, from their JSON form.

The pool is :func:`bench.lexicon_mix.record_mix` (35% posts with every kind of embed, facets,
replies, langs and self-labels; 45% likes; 15% follows; 5% reposts), as ``(nsid, dict)`` pairs
in the atproto JSON form. One operation validates one record, cycling through the pool.

- **atrepo**: ``builtin_registry().validate_json_record(nsid, obj)``: the JSON form validated
  against the lexicon and converted to the data model (``$link`` to a CID, data-model checks) in
  one pass, returning the data-model value (what a host stores). The registry is built once in setup.
- **atrepo (two-step)**: the same verdict the long way: ``datamodel.json_to_value(obj)`` (a full
  converted copy) then ``registry.validate_record(nsid, value)``.
- **atproto** (MarshalX SDK): ``get_or_create(obj, Model, strict=True,
  strict_string_format=True)`` from ``atproto_client.models.utils``, with ``Model`` the record
  class the SDK registers for the NSID (``record_registry.resolve_record_type``; looked up once
  per NSID in setup). ``get_or_create`` is the SDK's own entry point for turning raw data into
  its models: the SDK's firehose example calls it on every decoded record (``strict=False``),
  and ``get_response_model`` calls it with the expected model and ``strict=True`` for every
  typed XRPC response. With a model and ``strict=True`` it runs ``Model.model_validate`` and
  raises instead of degrading to a ``DotDict``. Without a model, ``strict=True`` always
  raises ("Can't properly parse model of type None") and ``strict=False`` silently degrades
  an invalid record to a ``DotDict``, so neither validates. ``strict_string_format=True``
  turns on the SDK's checks of string formats (did, at-uri, cid, datetime, language, ...),
  which atrepo always does; the second row, **atproto (no format checks)**, is the SDK's
  default (``strict_string_format=False``).

Setup checks that each contender accepts the whole pool and rejects a post whose required
``createdAt`` is missing. atrepo must also reject each record of :data:`EXTRA_TAMPERS`, which
break a lexicon or data-model rule that the SDK (0.0.73) does not check: its models have no
grapheme limits, its ``max_length`` on strings counts code points rather than UTF-8 bytes, blobs
are not checked against ``accept``/``maxSize``, union members without ``$type`` fall back to a
``DotDict``, and a float goes through. Both atproto rows accepted every one of them when this
module was written; that is not asserted, since a newer SDK may check more. "Checking more" is the point
of the comparison: both rows validate the same records, but atrepo does more work per record.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from bench.harness import Case, Contender, Runner, active_config, call_cycle, expect, register
from bench.lexicon_mix import POST, record_mix

POOL_SIZE = 2_000
QUICK_POOL_SIZE = 500
SEED = 20261130

Pool = list[tuple[str, dict[str, Any]]]


def _base_post() -> dict[str, Any]:
    """A valid post with an image and a tag facet, the base of the tampered records."""
    return {
        "$type": POST,
        "text": "hello #atproto",
        "createdAt": "2026-11-30T12:34:56.789Z",
        "langs": ["en"],
        "facets": [
            {
                "index": {"byteStart": 6, "byteEnd": 14},
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "atproto"}],
            }
        ],
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [
                {
                    "alt": "a harbour at dawn",
                    "image": {
                        "$type": "blob",
                        "ref": {"$link": "bafkreiammpqmip6vifnuoxqggvwpmsfunisevcphjzznzlrsuihz6n4qom"},
                        "mimeType": "image/jpeg",
                        "size": 180_412,
                    },
                    "aspectRatio": {"width": 4, "height": 3},
                }
            ],
        },
    }


def _tampered(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    record = _base_post()
    change(record)
    return record


def _image(record: dict[str, Any]) -> dict[str, Any]:
    image: dict[str, Any] = record["embed"]["images"][0]["image"]
    return image


#: Both contenders must reject this one: ``createdAt`` is required.
TAMPERED = _tampered(lambda r: r.pop("createdAt"))

#: atrepo must reject these too; the SDK accepts them (see the module docstring).
EXTRA_TAMPERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("text of 301 graphemes (maxGraphemes 300)", _tampered(lambda r: r.update(text="a" * 301))),
    (
        "text of 3,025 UTF-8 bytes in 121 graphemes (maxLength 3000)",
        _tampered(lambda r: r.update(text="👨‍👩‍👧‍👦" * 121)),
    ),
    (
        "image blob of type video/mp4 (accept image/*)",
        _tampered(lambda r: _image(r).update(mimeType="video/mp4")),
    ),
    (
        "image blob of 2,000,001 bytes (maxSize 2000000)",
        _tampered(lambda r: _image(r).update(size=2_000_001)),
    ),
    ("embed without $type (union member)", _tampered(lambda r: r["embed"].pop("$type"))),
    ("facet feature without $type", _tampered(lambda r: r["facets"][0]["features"][0].pop("$type"))),
    ("tag of 65 graphemes (maxGraphemes 64)", _tampered(lambda r: r.update(tags=["x" * 65]))),
    ("a float field (not in the data model)", _tampered(lambda r: r.update(score=0.5))),
)


def _pool() -> Pool:
    size = QUICK_POOL_SIZE if active_config().quick else POOL_SIZE
    return record_mix(size, SEED)


def _check(validate: Callable[[str, dict[str, Any]], object], pool: Pool, must_reject: Pool) -> None:
    """``validate`` accepts every pooled record and raises for every record of ``must_reject``."""
    for index, (nsid, record) in enumerate(pool):
        try:
            validate(nsid, copy.deepcopy(record))
        except Exception as exc:
            raise AssertionError(f"rejects pooled record {index} ({nsid}): {str(exc)[:120]}") from None
    for nsid, record in must_reject:
        try:
            validate(nsid, copy.deepcopy(record))
        except Exception:
            continue
        raise AssertionError(f"accepts a tampered {nsid}: {sorted(record)}")


def _atrepo() -> Runner:
    from atrepo.lexicons import builtin_registry

    validate = builtin_registry().validate_json_record
    pool = _pool()
    _check(validate, pool, [(POST, TAMPERED)] + [(POST, record) for _, record in EXTRA_TAMPERS])
    return call_cycle(validate, pool)


def _atrepo_two_step() -> Runner:
    from atrepo.core import datamodel
    from atrepo.lexicons import builtin_registry

    registry = builtin_registry()
    json_to_value = datamodel.json_to_value
    validate_record = registry.validate_record

    def validate(nsid: str, obj: dict[str, Any]) -> None:
        validate_record(nsid, json_to_value(obj))

    pool = _pool()
    _check(validate, pool, [(POST, TAMPERED)] + [(POST, record) for _, record in EXTRA_TAMPERS])
    return call_cycle(validate, pool)


def _atproto_setup(strict_string_format: bool) -> Callable[[], Runner]:
    def setup() -> Runner:
        from atproto_client.models.record_registry import resolve_record_type
        from atproto_client.models.utils import get_or_create

        pool = _pool()
        models: dict[str, Any] = {}
        for nsid, _ in pool:
            if nsid not in models:
                model = resolve_record_type(nsid)
                expect(model is not None, f"the SDK has no record model for {nsid}")
                models[nsid] = model

        def validate(nsid: str, obj: dict[str, Any]) -> object:
            return get_or_create(obj, models[nsid], strict=True, strict_string_format=strict_string_format)

        _check(validate, pool, [(POST, TAMPERED)])
        return call_cycle(validate, pool)

    return setup


@register("lexicon", "Lexicon validation of records from JSON form (records/s)", order=60)
def build() -> list[Case]:
    """One case: the record mix."""
    return [
        Case(
            "record mix",
            "validate one record of a network-shaped mix (35% posts, 45% likes, 15% follows, 5% reposts) "
            "from its JSON form against its lexicon",
            (
                Contender("atrepo", "atrepo", _atrepo, needs=("atrepo",)),
                Contender("atrepo", "atrepo (two-step)", _atrepo_two_step, needs=("atrepo",)),
                Contender(
                    "atproto",
                    "atproto (strict formats)",
                    _atproto_setup(True),
                    needs=("atproto_client",),
                    note="get_or_create(obj, Model, strict=True, strict_string_format=True)",
                ),
                Contender(
                    "atproto",
                    "atproto (no format checks)",
                    _atproto_setup(False),
                    needs=("atproto_client",),
                    note="SDK default: strict_string_format=False",
                ),
            ),
        )
    ]
