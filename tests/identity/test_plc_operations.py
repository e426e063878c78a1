"""did:plc operations: signing, CIDs, acceptance rules and property tests."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from plc_chain import HOUR_MS, KEYS, T0_MS, Chain, genesis, update

from atrepo.core import cbor
from atrepo.core.errors import AtrepoError
from atrepo.core.multibase import b64url_decode_strict
from atrepo.identity.plc.operations import (
    LogEntry,
    PLCRuleError,
    build_tombstone,
    check_next_operation,
    check_operation,
    check_reference_limits,
    format_timestamp,
    operation_cid,
    parse_timestamp,
    sign_operation,
    unsigned_bytes,
    verify_audit_log,
    verify_signature,
)

A, B, C, D = KEYS[0], KEYS[1], KEYS[2], KEYS[3]


def test_genesis_did_and_signature() -> None:
    did, op = genesis([A, B], A)
    assert did.startswith("did:plc:") and len(did) == 32
    sig = b64url_decode_strict(op["sig"])
    assert len(sig) == 64 and "=" not in op["sig"]
    assert A.public_key.verify(unsigned_bytes(op), sig)
    assert verify_signature(op, op["rotationKeys"]) == 0
    assert operation_cid(op).startswith("bafyrei")
    chain = Chain(did)
    state = chain.submit(op)
    assert state is not None and state.rotation_keys == (A.public_key.did_key(), B.public_key.did_key())
    assert verify_audit_log(chain.audit_json()).state == state


def test_timestamps_round_trip() -> None:
    for ms in (0, 1, T0_MS, T0_MS + 999):
        assert parse_timestamp(format_timestamp(ms)) == ms
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"


_FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=_FIRST_MS, max_value=_LAST_MS))
def test_timestamps_round_trip_in_every_year(ms: int) -> None:
    """Regression: years before 1000 were written with three digits and refused on reading."""
    text = format_timestamp(ms)
    assert len(text) == 24
    assert parse_timestamp(text) == ms


def test_timestamps_at_the_edges() -> None:
    assert format_timestamp(_FIRST_MS) == "0001-01-01T00:00:00.000Z"
    assert format_timestamp(_LAST_MS) == "9999-12-31T23:59:59.999Z"
    assert format_timestamp(-30_610_224_000_000 - 1) == "0999-12-31T23:59:59.999Z"
    assert parse_timestamp("0999-12-31T23:59:59.999Z") == -30_610_224_000_001
    for ms in (_FIRST_MS - 1, _LAST_MS + 1, 10**30, -(10**30)):
        with pytest.raises(PLCRuleError) as info:
            format_timestamp(ms)
        assert info.value.rule == "timestamp"
    with pytest.raises(PLCRuleError, match="audit-log"):
        parse_timestamp("0000-01-01T00:00:00.000Z")


@pytest.mark.parametrize("log", [None, 7, 1.5, "abc", b"[]", {"did": "x"}, True], ids=repr)
def test_audit_log_that_is_not_an_array(log: Any) -> None:
    """Regression: a non-list raised TypeError (or walked a string's characters)."""
    with pytest.raises(PLCRuleError, match="audit-log: an audit log is an array") as info:
        verify_audit_log(log)
    assert info.value.rule == "audit-log"


def test_updates_and_rotation() -> None:
    did, op = genesis([A, B], B)
    chain = Chain(did)
    chain.submit(op)
    chain.submit(update(chain.entries[-1].cid, B, [A, C], handle="bob.example.com"))
    # B was removed from the rotation keys: it can no longer sign.
    with pytest.raises(PLCRuleError) as info:
        chain.submit(update(chain.entries[-1].cid, B, [A, C]))
    assert info.value.rule == "signature"
    state = chain.submit(update(chain.entries[-1].cid, C, [C], signing=D))
    assert state is not None and state.verification_methods["atproto"] == D.public_key.did_key()
    assert verify_audit_log(chain.audit_json()).state == state


def test_forged_and_replayed_operations() -> None:
    did, op = genesis([A], A)
    chain = Chain(did)
    chain.submit(op)
    forged = update(chain.entries[-1].cid, D, [D])
    with pytest.raises(PLCRuleError, match="signature: does not verify"):
        chain.submit(forged)
    with pytest.raises(PLCRuleError, match="only its first operation may have prev null"):
        chain.submit(op)
    first = update(chain.entries[-1].cid, A, [A], handle="x.example.com")
    chain.submit(first)
    with pytest.raises(PLCRuleError) as info:
        chain.submit(first)  # replay: prev is no longer the head and A has no higher-priority rival
    assert info.value.rule == "nullification-priority"
    with pytest.raises(PLCRuleError, match="not an operation in the log"):
        chain.submit(update(operation_cid(forged), A, [A]))


def test_nullification_window() -> None:
    did, op = genesis([A, B], A)
    chain = Chain(did)
    chain.submit(op)
    base = chain.entries[-1].cid
    chain.submit(update(base, B, [A, B], handle="hijack.example.com"))
    # Exactly 72 h after the disputed op is still inside the window.
    state = chain.submit(update(base, A, [A, B], handle="back.example.com"), advance_ms=72 * HOUR_MS)
    assert state is not None and state.also_known_as == ("at://back.example.com",)
    assert [e.nullified for e in chain.entries] == [False, True, False]
    log = chain.audit_json()
    assert verify_audit_log(log).state == state

    late = Chain(did)
    late.submit(op)
    late.submit(update(base, B, [A, B], handle="hijack.example.com"))
    with pytest.raises(PLCRuleError) as info:
        late.submit(update(base, A, [A, B]), advance_ms=72 * HOUR_MS + 1)
    assert info.value.rule == "recovery-window"


def test_tombstone_rules() -> None:
    did, op = genesis([A, B], A)
    chain = Chain(did)
    chain.submit(op)
    base = chain.entries[-1].cid
    assert chain.submit(build_tombstone(B, base)) is None
    tomb = chain.entries[-1].cid
    with pytest.raises(PLCRuleError) as info:
        chain.submit(update(tomb, A, [A]))
    assert info.value.rule == "tombstone"
    # The higher-priority key can still undo the tombstone within the window.
    assert chain.submit(update(base, A, [A])) is not None
    assert verify_audit_log(chain.audit_json()).state is not None


def test_shape_rules() -> None:
    _did, op = genesis([A], A)
    bad: list[tuple[Any, str]] = [
        ([], "must be an object"),
        ({**op, "type": "nope"}, "unknown operation type"),
        ({**op, "extra": 1}, "unknown field"),
        ({k: v for k, v in op.items() if k != "services"}, "lacks field"),
        ({**op, "rotationKeys": "did:key:x"}, "rotationKeys must be an array"),
        ({**op, "verificationMethods": {"atproto": "zQ3s"}}, "not a did:key"),
        ({**op, "services": {"atproto_pds": {"type": "x"}}}, "services"),
        ({**op, "prev": 5}, "prev must be"),
        ({**op, "prev": "bafy-not-a-cid"}, "is not a CID"),
        ({**op, "sig": 5}, "sig must be a string"),
        ({"type": "plc_tombstone", "prev": None, "sig": "x"}, "tombstone must have a prev"),
    ]
    for value, words in bad:
        with pytest.raises(PLCRuleError, match=words) as info:
            check_operation(value)
        assert info.value.rule == "format"


def test_reference_limits_and_size() -> None:
    did, op = genesis([A], A)
    check_reference_limits(op)
    with pytest.raises(PLCRuleError, match="number of rotationKeys is 11"):
        check_reference_limits({**op, "rotationKeys": [A.public_key.did_key()] * 11})
    with pytest.raises(PLCRuleError, match="duplicate"):
        check_reference_limits({**op, "alsoKnownAs": ["at://a.com", "at://a.com"]})
    with pytest.raises(PLCRuleError, match="usable did:key"):
        check_reference_limits({**op, "rotationKeys": ["did:key:zzz"]})
    with pytest.raises(PLCRuleError, match="length of a service id"):
        check_reference_limits({**op, "services": {"x" * 33: {"type": "t", "endpoint": "https://e.com"}}})
    big = sign_operation({**op, "alsoKnownAs": [f"at://{i}.{'a' * 200}.com" for i in range(20)]}, A)
    with pytest.raises(PLCRuleError) as info:
        check_next_operation(did, [], big, T0_MS)
    assert info.value.rule == "size"


# --------------------------------------------------------------------------
# Property tests

_step = st.tuples(st.sampled_from(["update"] * 3 + ["recover"] * 3 + ["tombstone"]), st.integers(0, 1000))


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    """A valid history built by our client: updates, recoveries, maybe a tombstone."""
    rotation = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique_by=id))
    did, op = genesis(rotation, draw(st.sampled_from(rotation)))
    chain = Chain(did)
    chain.submit(op)
    for action, seed in draw(st.lists(_step, max_size=6)):
        active = chain.active
        head = active[-1]
        if head.operation["type"] == "plc_tombstone":
            break
        keys = [k for k in KEYS if k.public_key.did_key() in head.operation["rotationKeys"]]
        if action == "update":
            new_rotation = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique_by=id))
            signer = keys[-1 - seed % len(keys)]  # low-priority signers leave room for recoveries
            chain.submit(update(head.cid, signer, new_rotation, handle=f"h{seed}.example.com"))
        elif action == "tombstone":
            chain.submit(build_tombstone(keys[seed % len(keys)], head.cid))
        elif len(active) >= 2:
            j = seed % (len(active) - 1)
            base, disputed = active[j], active[j + 1]
            base_keys = base.operation["rotationKeys"]
            rival = verify_signature(disputed.operation, base_keys)
            if rival == 0 or chain.now_ms - disputed.created_at_ms >= 72 * HOUR_MS:
                continue
            signer = next(k for k in KEYS if k.public_key.did_key() == base_keys[seed % rival])
            chain.submit(
                update(base.cid, signer, keys or [signer], handle=f"r{seed}.example.com"), advance_ms=HOUR_MS
            )
    return chain


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_any_client_history_verifies(chain: Chain) -> None:
    result = verify_audit_log(chain.audit_json())
    assert [e.cid for e in result.active] == [e.cid for e in chain.active]
    head = chain.active[-1].operation
    assert result.tombstoned == (head["type"] == "plc_tombstone")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.data())
def test_mutating_any_byte_invalidates(chain: Chain, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(chain.entries) - 1))
    before = [e for e in chain.entries[:position]]
    active: list[LogEntry] = []
    for entry in before:
        # Rebuild the active chain as it was when the op at ``position`` arrived.
        verdict = check_next_operation(chain.did, active, entry.operation, entry.created_at_ms)
        if verdict.prev_index is not None:
            del active[verdict.prev_index + 1 :]
        active.append(entry)
    target = chain.entries[position]
    encoded = cbor.encode(dict(target.operation))
    index = data.draw(st.integers(0, len(encoded) - 1))
    value = data.draw(st.integers(0, 255))
    assume(value != encoded[index])
    mutated_bytes = encoded[:index] + bytes([value]) + encoded[index + 1 :]
    try:
        mutated = cbor.decode(mutated_bytes)
    except AtrepoError:
        return
    with pytest.raises(PLCRuleError):
        check_next_operation(chain.did, active, mutated, target.created_at_ms)
