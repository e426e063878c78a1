"""DAG-CBOR: ``cbor.decode`` of any bytes; what decodes is canonical and in the data model."""

from __future__ import annotations

from atrepo.core import cbor, datamodel

from .harness import REFUSED, guarded


def test_one_input(data: bytes) -> None:
    value = guarded(lambda: cbor.decode(data))
    if value is REFUSED:
        return
    # Accepted bytes are the one canonical encoding of their value.
    assert cbor.encode(value) == data
    # The decoder checks types, ints, depth and links; $type and blob shapes
    # are the record layer's rules, so validation may still refuse (typed).
    if guarded(lambda: datamodel.validate_value(value)) is not REFUSED:
        # A valid value's JSON form converts back to the same value.
        assert datamodel.json_to_value(datamodel.value_to_json(value), top_level_object=False) == value
    guarded(lambda: cbor.decode_node(data))
