"""Smoke test of ``bench/pg_driver.py``: a quick run on the test's database must measure every variant.

Why: the benchmark backs the choice of PostgreSQL driver (docs/scaling.md), so
it must keep running as the stores change. As the other bench smoke tests do,
it runs in this interpreter, where asyncpg is installed as a test dependency
(it is no dependency of atrepo), and checks that both drivers' rows are
measured. The benchmark itself checks that every read finds its row; no
timing thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (section, driver, variant, connections) of every row a quick run reports
PSYCOPG_ROWS = {
    ("commit", "psycopg", "execute", 1),
    ("commit", "psycopg", "pipeline", 1),
    ("commit", "psycopg", "execute", 4),
    ("commit", "psycopg", "pipeline", 4),
    ("bulk", "psycopg", "binary COPY", 1),
    ("bulk", "psycopg", "executemany", 1),
    ("read", "psycopg", "execute", 1),
}
ASYNCPG_ROWS = {
    ("commit", "asyncpg", "tasks", 1),
    ("commit", "asyncpg", "threads, hop/tx", 1),
    ("commit", "asyncpg", "threads, hop/stmt", 1),
    ("commit", "asyncpg", "tasks", 4),
    ("commit", "asyncpg", "threads, hop/tx", 4),
    ("commit", "asyncpg", "threads, hop/stmt", 4),
    ("bulk", "asyncpg", "copy_records_to_table", 1),
    ("bulk", "asyncpg", "executemany", 1),
    ("read", "asyncpg", "await", 1),
    ("read", "asyncpg", "thread, hop/stmt", 1),
}


def _run(python: Path | str, database: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(python), "-m", "bench.pg_driver", "--quick", "--json", "--database", database],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload: dict[str, Any] = json.loads(proc.stdout)
    for row in payload["summary"]:
        assert row["rate"] > 0, row
        assert row["client_us_per_op"] > 0, row
        assert row["server_us_per_op"] is None or row["server_us_per_op"] >= 0, row
    return payload


def _rows(payload: dict[str, Any]) -> set[tuple[str, str, str, int]]:
    return {(r["section"], r["driver"], r["variant"], r["conns"]) for r in payload["summary"]}


def test_quick_run_measures_both_drivers(pg_url: str) -> None:
    # asyncpg is a test dependency (the dev extra) for this; atrepo itself never imports it
    payload = _run(sys.executable, pg_url)
    assert _rows(payload) == PSYCOPG_ROWS | ASYNCPG_ROWS
    assert payload["skipped"] == {}
