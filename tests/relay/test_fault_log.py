"""Faults are all counted, but a host sending garbage cannot flood the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from atrepo.relay.ingest import FAULT_LOGS_PER_MINUTE, Ingest
from atrepo.xrpc import Metrics


def test_fault_lines_are_capped_per_kind_and_host(caplog: pytest.LogCaptureFixture) -> None:
    none: Any = None
    metrics = Metrics()
    ingest = Ingest(none, none, none, none, metrics)
    with caplog.at_level(logging.WARNING, logger="atrepo.relay"):
        for i in range(3 * FAULT_LOGS_PER_MINUTE):
            ingest.fault(
                "invalid-signature", "evil.example", f"did:plc:{i:024d}", "signature does not verify"
            )
        ingest.fault("authority", "evil.example", None, "other kind: logged")
        ingest.fault("invalid-signature", "good.example", None, "other host: logged")
    lines = [r.getMessage() for r in caplog.records if r.name == "atrepo.relay"]
    assert sum("invalid-signature from evil.example" in line for line in lines) == FAULT_LOGS_PER_MINUTE
    assert any("other kind" in line for line in lines) and any("other host" in line for line in lines)
    assert ingest.fault_counts["invalid-signature"] == 3 * FAULT_LOGS_PER_MINUTE + 1
    assert len(ingest.faults) == 3 * FAULT_LOGS_PER_MINUTE + 2  # the status page still sees every one
    total = 3 * FAULT_LOGS_PER_MINUTE + 1
    assert f'atrepo_relay_faults_total{{kind="invalid-signature"}} {total}' in metrics.render()
