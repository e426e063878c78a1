"""did:plc audit-log fixtures: valid logs verify, invalid ones fail naming the rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atrepo.identity.plc.operations import (
    PLCRuleError,
    genesis_did,
    operation_cid,
    render_document,
    state_after,
    verify_audit_log,
)

FIXTURES = Path(__file__).resolve().parent.parent / "interop-plc" / "audit_log"
VALID = sorted((FIXTURES / "valid").glob("*.json"))
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))

#: invalid fixture -> (rule, words the message must contain)
EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    "log_invalid_nullification_reused_key": ("nullification-priority", "strictly higher priority"),
    "log_invalid_nullification_too_slow": ("recovery-window", "recovery window is 72 h"),
    "log_invalid_sig_b64_newline": ("signature-encoding", "invalid base64url character"),
    "log_invalid_sig_b64_padding_bits": ("signature-encoding", "non-zero trailing bits"),
    "log_invalid_sig_b64_padding_chars": ("signature-encoding", "padding is not allowed"),
    "log_invalid_sig_der": ("signature", "DER-encoded"),
    "log_invalid_sig_k256_high_s": ("signature", "high-S"),
    "log_invalid_sig_p256_high_s": ("signature", "high-S"),
    "log_invalid_update_nullified": ("prev", "is a nullified operation"),
    "log_invalid_update_tombstoned": ("tombstone", "no operation may follow the tombstone"),
}


def load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    assert isinstance(data, list)
    return data


def test_fixture_sets_are_complete() -> None:
    assert len(VALID) == 10
    assert {p.stem for p in INVALID} == set(EXPECTED_FAILURES)
    assert (FIXTURES.parent / "LICENSE-MIT").exists() and (FIXTURES.parent / "README.md").exists()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_logs_verify(path: Path) -> None:
    log = load(path)
    result = verify_audit_log(log)
    did = log[0]["did"]
    assert result.did == did
    assert genesis_did(log[0]["operation"]) == did
    for entry in log:
        assert operation_cid(entry["operation"]) == entry["cid"]
    active = [e for e in log if not e["nullified"]]
    assert [e.cid for e in result.active] == [e["cid"] for e in active]
    last = active[-1]["operation"]
    if last["type"] == "plc_tombstone":
        assert result.tombstoned and result.document() is None
        return
    expected = state_after(did, last)
    assert expected is not None and result.state == expected
    doc = result.document()
    assert doc is not None and doc == render_document(expected)
    assert doc["id"] == did
    if last["type"] == "plc_operation":
        assert doc["alsoKnownAs"] == last["alsoKnownAs"]
        keys = {
            m["id"].split("#")[1]: "did:key:" + m["publicKeyMultibase"] for m in doc["verificationMethod"]
        }
        assert keys == last["verificationMethods"]
        services = {s["id"][1:]: s["serviceEndpoint"] for s in doc["service"]}
        assert services == {n: s["endpoint"] for n, s in last["services"].items()}


def test_legacy_create_is_interpreted() -> None:
    log = load(FIXTURES / "valid" / "log_legacy_dholms.json")
    genesis = log[0]["operation"]
    state = state_after(log[0]["did"], genesis)
    assert state is not None
    assert state.rotation_keys == (genesis["recoveryKey"], genesis["signingKey"])
    assert state.also_known_as == ("at://dan.bsky.social",)
    assert state.services["atproto_pds"].endpoint == "https://bsky.social"
    assert render_document(state)["@context"][-1] == "https://w3id.org/security/suites/secp256k1-2019/v1"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_logs_are_rejected_naming_the_rule(path: Path) -> None:
    rule, words = EXPECTED_FAILURES[path.stem]
    with pytest.raises(PLCRuleError) as info:
        verify_audit_log(load(path))
    assert info.value.rule == rule
    assert words in str(info.value)
    assert str(info.value).startswith(rule + ": ")


def test_tampered_logs() -> None:
    log = load(FIXTURES / "valid" / "log_nullification.json")
    flipped = [dict(e) for e in log]
    flipped[1]["nullified"] = False
    with pytest.raises(PLCRuleError, match="nullified=False but the log makes it nullified=True"):
        verify_audit_log(flipped)
    wrong_cid = [dict(e) for e in log]
    wrong_cid[0]["cid"] = log[1]["cid"]
    with pytest.raises(PLCRuleError, match="hashes to"):
        verify_audit_log(wrong_cid)
    wrong_did = [dict(e) for e in log]
    wrong_did[0]["did"] = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    with pytest.raises(PLCRuleError, match="genesis operation hashes to"):
        verify_audit_log(wrong_did)
    backwards = [dict(e) for e in log]
    backwards[2]["createdAt"] = "1969-12-31T00:00:00.000Z"
    with pytest.raises(PLCRuleError, match="goes backwards"):
        verify_audit_log(backwards)
    with pytest.raises(PLCRuleError, match="at least the genesis"):
        verify_audit_log([])
    with pytest.raises(PLCRuleError, match="not YYYY"):
        verify_audit_log([{**log[0], "createdAt": "yesterday"}])
    with pytest.raises(PLCRuleError, match="is for"):
        verify_audit_log(log, expected_did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
