"""The identity benchmark runs end to end (tiny sizes; figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_identity_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_identity", "--rounds", "1", "--dids", "3", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["cached_lookups"]["atrepo DIDResolver"]["median"] > 0
    assert result["operations"]["atrepo verify_audit_log (10 fixture logs)"]["median"] > 0
