"""Record JSON: ``datamodel.parse_json``; accepted values validate, encode and round-trip."""

from __future__ import annotations

from atrepo.core import cbor, datamodel

from .harness import REFUSED, guarded


def test_one_input(data: bytes) -> None:
    value = guarded(lambda: datamodel.parse_json(data))
    if value is REFUSED:
        return
    datamodel.validate_value(value, top_level_object=True)
    encoded = cbor.encode(value)
    assert cbor.decode(encoded) == value
    assert datamodel.json_to_value(datamodel.value_to_json(value)) == value
