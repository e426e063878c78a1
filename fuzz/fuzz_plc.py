"""did:plc: operations and audit logs as a directory would send them, and timestamps."""

from __future__ import annotations

from collections.abc import Mapping

from atrepo.core.errors import PLCRuleError
from atrepo.core.jsonio import parse_outside_json
from atrepo.identity.plc import operations as plc
from atrepo.identity.plc.client import verify_audit_log_bytes

from .harness import REFUSED, guarded

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def test_one_input(data: bytes) -> None:
    # The client's own path: body bytes -> verified log (any DID; a mismatch is an error too).
    guarded(lambda: verify_audit_log_bytes(data, DID))
    value = guarded(lambda: parse_outside_json(data, lambda why: PLCRuleError("format", why)))
    if value is REFUSED:
        _timestamp(data)
        return
    guarded(lambda: plc.verify_audit_log(value))  # any JSON value, list or not, on purpose
    if isinstance(value, Mapping):
        kind = guarded(lambda: plc.check_operation(value))
        if kind is not REFUSED:
            guarded(lambda: plc.check_reference_limits(value))
            guarded(lambda: plc.operation_cid(value))
            guarded(lambda: plc.check_next_operation(DID, [], value, 0))
    elif isinstance(value, list) and value and isinstance(value[0], Mapping):
        guarded(lambda: plc.check_operation(value[0]))


def _timestamp(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    ms = guarded(lambda: plc.parse_timestamp(text))
    if isinstance(ms, int):
        assert plc.format_timestamp(ms) == text, text
    number = int.from_bytes(data[:8], "big", signed=True)
    shown = guarded(lambda: plc.format_timestamp(number))
    if isinstance(shown, str):
        assert plc.parse_timestamp(shown) == number, (number, shown)
