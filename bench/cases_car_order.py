"""Whole-process verification of a 200k-record repository CAR in three block orders.

The ``car`` group times ``verify_repo_car`` inside the benchmark process on a
pre-order file. Real exports are not in pre-order: the reference host writes
the commit, the MST nodes level by level, then the records
(``MST.writeToCarStream`` in @atproto/repo), and a store that iterates its
blocks by CID gives any order at all. This group runs what a user runs,
``atrepo car verify FILE --key K --json``, as a fresh process on the same
repository in three orders (``repo_fixtures.CAR_ORDERS``):

- **pre-order**: the streamable order (one pass, memory bounded by tree height);
- **breadth-first**: the reference host's order (``MST.writeToCarStream``);
- **shuffled**: the commit first, every other block in a seeded random order
  (the order of a store that lists its blocks by CID, as the reference PDS's
  ``getRepo`` does within each revision).

The last two do not stream: verification indexes the file first, in C when
the extension is built (``core/_carindex.c``: each block hash-checked into flat
arrays, MST nodes kept), then walks the tree against the index; without it,
the one pass sets early blocks aside in Python (``verify.STASH_ONE_PASS``).

One sample is one process, start to exit, so records/s includes interpreter
start-up and imports (about 0.15 s here). Setup compiles the atrepo package's
bytecode first, as ``pip install`` does for any package it installs: an
editable install under ``PYTHONDONTWRITEBYTECODE`` (as on this machine) would
otherwise recompile every atrepo module in every sample, about 0.1 s that no
installed copy pays. Peak RSS is the child's
``ru_maxrss``, as ``/usr/bin/time -v`` reports it ("Maximum resident set
size"); when ``/usr/bin/time`` is installed the child runs under it and the
figure is read from its report, otherwise from ``os.wait4``. The row's peak is
the median over its samples. Every sample checks the JSON result: ``ok`` and
the record count.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import repo_fixtures
from bench.harness import Case, Contender, Runner, Target, active_config, expect, register

MiB = 1 << 20
#: Records of the full-size fixture (the quick run uses ``repo_fixtures.QUICK_RECORDS``).
RECORDS = 200_000
#: GNU time's verbose report, when the machine has it.
TIME = "/usr/bin/time"
_MAX_RSS = re.compile(rb"Maximum resident set size \(kbytes\): (\d+)")

_TITLES = {
    "preorder": "pre-order",
    "bfs": "breadth-first (reference export)",
    "shuffled": "shuffled",
}


def _command(path: Path, did_key: str) -> list[str]:
    """The CLI as installed beside this interpreter (``python -m atrepo`` when there is no script)."""
    script = Path(sys.executable).with_name("atrepo")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "atrepo"]
    return [*head, "car", "verify", str(path), "--key", did_key, "--json"]


def run_process(command: list[str]) -> tuple[bytes, int]:
    """Run ``command`` to its end; return (stdout, peak RSS in bytes of the process).

    Under ``/usr/bin/time -v`` when installed (the figure it prints is the
    child's ``ru_maxrss``); otherwise ``os.wait4`` hands over the same
    ``ru_maxrss`` for exactly this child, so nothing extra is needed.
    """
    use_time = os.access(TIME, os.X_OK)
    with tempfile.TemporaryFile() as report:
        argv = [TIME, "-v", *command] if use_time else command
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=report)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        report.seek(0)
        errors = report.read()
    if proc.returncode != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise RuntimeError(f"{command[0]} failed: {tail[0]}")
    found = _MAX_RSS.search(errors) if use_time else None
    kib = int(found.group(1)) if found else usage.ru_maxrss
    return out, kib * 1024 if sys.platform != "darwin" else kib


@functools.cache
def _compile_bytecode() -> None:
    """Write atrepo's ``__pycache__`` (``compileall`` writes even under ``PYTHONDONTWRITEBYTECODE``)."""
    import compileall

    import atrepo

    for folder in atrepo.__path__:
        compileall.compile_dir(folder, quiet=1)


def _setup(order: str, records: int, peaks: list[float]) -> Runner:
    _compile_bytecode()
    fx = repo_fixtures.load(records, 0)
    path = fx.ordered_car_path(order)
    command = _command(path, fx.did_key)

    def run(n: int) -> None:
        out, peak = run_process(command)
        result = json.loads(out)
        expect(result.get("ok") is True, f"verification failed: {result.get('error')}")
        expect(result.get("records") == fx.records, f"verified {result.get('records')} of {fx.records}")
        peaks.append(peak)

    return run


def _probe(peaks: list[float]) -> dict[str, float]:
    """The median peak RSS over the timed samples (each sample is a fresh process)."""
    return {"peak_rss_bytes": statistics.median(peaks)} if peaks else {}


@register("carproc", "CAR verification as a process, by block order (records/s, peak RSS)", order=45)
def build() -> list[Case]:
    """One case per block order, each running the CLI on the same repository."""
    records = repo_fixtures.QUICK_RECORDS if active_config().quick else RECORDS
    cases = []
    for order in repo_fixtures.CAR_ORDERS:
        peaks: list[float] = []
        contender = Contender(
            "atrepo",
            "atrepo car verify (process)",
            functools.partial(_setup, order, records, peaks),
            ("atrepo",),
            note=f"{'/usr/bin/time -v' if shutil.which(TIME) else 'os.wait4'}: wall time and max RSS",
            ops=records,
            probe=functools.partial(_probe, peaks),
        )
        cases.append(
            Case(
                f"verify {records:,}-record CAR, {_TITLES[order]}, whole process (records/s)",
                f"`atrepo car verify --key --json` on a {records:,}-record CAR, blocks {_TITLES[order]}",
                (contender,),
                target=Target(180_000, "records/s", max_peak_rss_bytes=80 * MiB),
                max_reps=5,
            )
        )
    return cases
