"""A tiny did:plc client for tests: builds signed chains the way a PDS would."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from atrepo.core.keys import Curve, PrivateKey
from atrepo.identity.plc.operations import (
    LogEntry,
    PLCState,
    Service,
    build_operation,
    check_next_operation,
    genesis_did,
)

T0_MS = 1_700_000_000_000
HOUR_MS = 3_600_000


def fixed_key(index: int, curve: Curve | None = None) -> PrivateKey:
    """Deterministic keys so failures reproduce (alternating curves by default)."""
    chosen: Curve = curve or ("k256" if index % 2 == 0 else "p256")
    return PrivateKey.from_bytes(chosen, hashlib.sha256(f"plc-test-key-{index}".encode()).digest())


KEYS = [fixed_key(i) for i in range(8)]
BY_DID_KEY = {k.public_key.did_key(): k for k in KEYS}


def genesis(
    rotation: list[PrivateKey],
    signer: PrivateKey,
    handle: str = "alice.example.com",
    pds: str = "https://pds.example.com",
) -> tuple[str, dict[str, Any]]:
    op = build_operation(
        signer,
        rotation_keys=[k.public_key.did_key() for k in rotation],
        verification_methods={"atproto": signer.public_key.did_key()},
        also_known_as=[f"at://{handle}"],
        services={"atproto_pds": Service("AtprotoPersonalDataServer", pds)},
        prev=None,
    )
    return genesis_did(op), op


def update(
    prev_cid: str,
    signer: PrivateKey,
    rotation: list[PrivateKey],
    *,
    handle: str = "alice.example.com",
    signing: PrivateKey | None = None,
    pds: str = "https://pds.example.com",
) -> dict[str, Any]:
    return build_operation(
        signer,
        rotation_keys=[k.public_key.did_key() for k in rotation],
        verification_methods={"atproto": (signing or signer).public_key.did_key()},
        also_known_as=[f"at://{handle}"],
        services={"atproto_pds": Service("AtprotoPersonalDataServer", pds)},
        prev=prev_cid,
    )


@dataclass
class Chain:
    """An in-memory directory for one DID, applying the real acceptance rule."""

    did: str
    entries: list[LogEntry] = field(default_factory=list)
    now_ms: int = T0_MS

    @property
    def active(self) -> list[LogEntry]:
        return [e for e in self.entries if not e.nullified]

    def submit(self, op: dict[str, Any], advance_ms: int = 1000) -> PLCState | None:
        self.now_ms += advance_ms
        nullified = {e.cid for e in self.entries if e.nullified}
        verdict = check_next_operation(self.did, self.active, op, self.now_ms, nullified_cids=nullified)
        gone = {e.cid for e in verdict.nullified}
        self.entries = [
            LogEntry(e.did, e.operation, e.cid, e.nullified or e.cid in gone, e.created_at_ms)
            for e in self.entries
        ]
        self.entries.append(LogEntry(self.did, op, verdict.cid, False, self.now_ms))
        return verdict.state

    def audit_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]
