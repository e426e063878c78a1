"""The fuzz targets in CI: every corpus file replayed, then each target fuzzed for a few seconds.

The bounded runs use the dependency-free mutation engine with a fixed seed,
so a failure here reproduces with the same command line (printed on failure);
long coverage-guided runs are ``make fuzz``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz.run import mutate

from fuzz import harness

ROOT = Path(__file__).resolve().parents[2]
#: Seconds each target is fuzzed here; all targets run at once, in parallel.
SECONDS = float(os.environ.get("ATREPO_FUZZ_TEST_SECONDS", "4"))


def test_every_target_has_a_corpus() -> None:
    for name in harness.TARGETS:
        files = list(harness.corpus_dir(name).iterdir())
        assert len(files) >= 4, name
        assert all(f.stat().st_size <= 64 * 1024 for f in files), name


@pytest.mark.parametrize("name", harness.TARGETS)
def test_corpus_replays_clean(name: str) -> None:
    entry = harness.load(name)
    for path in sorted(harness.corpus_dir(name).iterdir()):
        try:
            entry(path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"{name}: {path.name} crashed the target: {exc!r}"[:500]) from exc


def test_contract_refuses_long_and_doubled_messages() -> None:
    from atrepo.core.errors import InvalidCAR, InvalidMST

    harness.check_error(InvalidMST("short"))
    with pytest.raises(AssertionError):
        harness.check_error(InvalidMST("x" * (harness.MAX_MESSAGE_CHARS + 1)))
    with pytest.raises(AssertionError):
        harness.check_error(InvalidCAR("bad header at byte 1", 1))


def test_mutations_are_deterministic_and_bounded() -> None:
    import random

    pool = [b"abc", b"\xa2\x61e\x80\x61l\xf6"]
    first = [mutate(pool[1], pool, random.Random(5), 64) for _ in range(50)]
    again = [mutate(pool[1], pool, random.Random(5), 64) for _ in range(50)]
    assert first == again and all(len(m) <= 64 for m in first)


@pytest.fixture(scope="module")
def bounded_runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every target fuzzed for SECONDS at once (subprocesses: own memory limit and alarms)."""
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fuzz.run",
                name,
                "--engine",
                "mutate",
                "--seconds",
                str(SECONDS),
                "--seed",
                "1",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in harness.TARGETS
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=SECONDS + 60)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, None)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    yield results


@pytest.mark.parametrize("name", harness.TARGETS)
def test_bounded_fuzz_run(name: str, bounded_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = bounded_runs[name]
    command = " ".join(result.args[1:])
    assert result.returncode == 0, f"`python {command}` found a crash:\n{result.stdout[-3000:]}"
    assert " inputs in " in result.stdout, result.stdout[-2000:]
