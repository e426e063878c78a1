"""Smoke test of ``bench/sync_bench.py``: a tiny run must complete and check its mirrors.

The benchmark itself fails when a mirror's digest differs from the host's, so a
zero exit with positive figures means every phase (backfill, live, catch-up)
mirrored exactly what the host holds. No timing thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_sync_bench_run_mirrors_every_phase() -> None:
    args = ["--quick", "--json", "--quiet", "--repos", "2", "--records", "200", "--commits", "40"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sync_bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    assert payload["backfill"]["records"] == 400
    assert payload["backfill"]["rate"] > 0
    assert [run["events"] for run in payload["live"]["runs"]] == [40]
    assert payload["live"]["mirror_records_after"] == 400 + 4 * 4 + 40
    assert payload["catchup"]["events"] == 40
    assert payload["catchup"]["rate"] > 0
