"""Smoke test of the benchmark harness: a quick run of atrepo's own cases.

Peers are bench-only dependencies, so only atrepo is selected; the harness must
produce a positive figure for every case. No timing thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_quick_run_measures_every_case_for_atrepo() -> None:
    proc = _run("--quick", "--json", "--impl", "atrepo", "--quiet")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["machine"]["cpu_count"]
    groups = set(payload["config"]["groups"])
    assert {"cbor", "sig", "mst", "car", "sync"} <= groups
    results = payload["results"]
    assert {r["impl"] for r in results} == {"atrepo"}
    cases = {(r["group"], r["case"]) for r in results}
    assert {g for g, _ in cases} == groups
    for r in results:
        assert r["status"] == "ok", r
        assert r["ops_per_s"] > 0, r
        assert len(r["samples_ops_per_s"]) == payload["config"]["reps"]
        assert all(s > 0 for s in r["samples_ops_per_s"]), r
        if r["label"] == "atrepo":  # the reference row; other atrepo rows (e.g. "atrepo (two-step)") vary
            assert r["ratio_atrepo_over_this"] == 1.0
        else:
            assert r["ratio_atrepo_over_this"] > 0
    # The repository cases carry the targets, evaluated (not hard-coded),
    # and the CAR case a peak RSS measured in a fresh process.
    targeted = [r for r in results if r["group"] in {"mst", "car", "sync"}]
    assert len(targeted) == 4
    for r in targeted:
        assert r["target"].startswith(">= "), r
        assert r["target_met"] == (r["ops_per_s"] >= _target_rate(r["target"])) or r["group"] == "car", r
    (car,) = [r for r in targeted if r["group"] == "car"]
    assert car["metrics"]["baseline_rss_bytes"] > 0
    assert car["metrics"]["peak_rss_bytes"] >= car["metrics"]["baseline_rss_bytes"]


def _target_rate(text: str) -> float:
    """The rate of a target such as '>= 300k keys/s'."""
    figure = text.split()[1]
    scale = {"k": 1e3, "M": 1e6}.get(figure[-1], 1.0)
    return float(figure.rstrip("kM")) * scale


def test_missing_and_unsupported_peers_are_reported_not_fatal() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.harness import QUICK, Case, Contender, Group, call_repeat, run_case

    case = Case(
        "len",
        "len of a short bytes value",
        (
            Contender("atrepo", "atrepo", lambda: call_repeat(len, b"abc")),
            Contender("ghost", "ghost", lambda: call_repeat(len, b"abc"), needs=("no_such_module_xyz",)),
            Contender("none", "none", unsupported="has no len"),
            Contender("broken", "broken", lambda: call_repeat(len, None)),
        ),
    )
    group = Group("t", "test", 0, lambda: [case])
    by_impl = {r.impl: r for r in run_case(group, case, QUICK)}
    assert by_impl["atrepo"].median > 0
    assert by_impl["atrepo"].ratio == 1.0
    assert by_impl["ghost"].status == "not installed"
    assert "no_such_module_xyz" in by_impl["ghost"].note
    assert by_impl["none"].status == "unsupported"
    assert by_impl["broken"].status == "error"
    assert not by_impl["broken"].samples


def test_unknown_group_is_an_error() -> None:
    proc = _run("--only", "nosuchgroup")
    assert proc.returncode == 2
    assert "unknown group" in proc.stderr


def test_window_ab_measures_both_sides() -> None:
    """``bench.host_window_ab``: two real servers, one load switching between them; no timing thresholds."""
    args = ["--clients", "1", "--seconds", "1.5", "--window", "0.3"]
    args += ["--b-env", "ATREPO_BENCH_SIDE=B", "--firehose", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.host_window_ab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["b_env"] == ["ATREPO_BENCH_SIDE=B"]
    (run,) = out["runs"]
    assert run["clients"] == 1 and run["pairs"] >= 1
    assert run["a_rate"] > 0 and run["b_rate"] > 0 and run["b_over_a"] > 0
    for side in ("a", "b"):
        assert 0 < run[f"{side}_p50_ms"] <= run[f"{side}_p99_ms"]
        assert run[f"{side}_cpu_ms_per_write"] > 0
        assert run[f"{side}_frames"] > 0  # its live subscribeRepos reader got the side's commits
