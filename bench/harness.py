"""Registry, timer and report for the benchmarks.

A *group* is one module ``bench/cases_<name>.py`` that decorates a builder with
:func:`register`. The builder returns :class:`Case` objects; each case lists
one :class:`Contender` per implementation (ours first, then the peers). A
contender's ``setup`` imports its library, prepares its native input, checks
that it computes the right answer, and returns a :class:`Runner` that performs
``n`` operations. Peers whose modules are missing are reported as
"not installed"; peers without such an operation carry an ``unsupported`` note.

Timing: every runner is calibrated to about ``target`` seconds per sample, then
``reps`` rounds are taken; a round times each contender of a case once, in an
order that rotates from round to round, with the garbage collector collected
before and disabled during each sample, as :mod:`timeit` does. The reported
figure is the median of the samples; the spread is their min and max; the ratio
is the median over rounds of atrepo's rate divided by the contender's rate in
the same round.

Large cases (a whole repository per sample) give each contender a fixed
``ops`` count, which skips calibration, and cap the rounds with
``Case.max_reps``. A case may carry a :class:`Target` for atrepo's figure; the
report says whether it was met. A contender's ``probe`` runs once after the
timing, e.g. :func:`measure_in_child` to record a peak RSS in a fresh process.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice, repeat
from typing import Any, NamedTuple, TextIO

OURS = "atrepo"

Runner = Callable[[int], object]
"""Performs ``n`` operations of a case; the return value is ignored."""

Builder = Callable[[], Sequence["Case"]]

#: Distributions whose versions the report header shows (when installed).
REPORTED_DISTRIBUTIONS = (
    "atrepo",
    "cbrrr",
    "coincurve",
    "cryptography",
    "atproto",
    "libipld",
    "arroba",
    "dag-cbor",
    "multiformats",
    "atmst",
)


@dataclass(frozen=True)
class Contender:
    """One implementation of a case.

    ``needs`` are top-level module names that must be importable (otherwise the
    row says "not installed"); ``unsupported`` explains a peer that has no such
    operation, in which case ``setup`` is not used. ``note`` is shown in the
    table even when the row is measured (how a peer's operation was composed,
    a smaller size). ``ops`` fixes the operations per sample (no calibration).
    ``probe`` runs once after timing and returns extra metrics for the row
    (e.g. ``peak_rss_bytes``, ``baseline_rss_bytes``).
    """

    impl: str
    label: str
    setup: Callable[[], Runner] | None = None
    needs: tuple[str, ...] = ()
    unsupported: str | None = None
    note: str = ""
    ops: int | None = None
    probe: Callable[[], dict[str, float]] | None = None


@dataclass(frozen=True)
class Target:
    """What atrepo's figure should reach: a rate, and optionally a peak-RSS ceiling."""

    rate: float
    unit: str = "ops/s"
    max_peak_rss_bytes: int | None = None

    def describe(self) -> str:
        text = f">= {_si(self.rate)} {self.unit}"
        if self.max_peak_rss_bytes is not None:
            text += f", peak RSS <= {_mib(self.max_peak_rss_bytes)}"
        return text

    def verdict(self, res: Result) -> tuple[bool | None, str]:
        """Whether ``res`` reaches the target (None when a needed figure is missing), and why not."""
        if not res.samples:
            return None, "not measured"
        misses = []
        if res.median < self.rate:
            misses.append(f"{_si(res.median)} {self.unit}")
        if self.max_peak_rss_bytes is not None:
            peak = res.metrics.get("peak_rss_bytes")
            if peak is None:
                return None, "peak RSS not measured"
            if peak > self.max_peak_rss_bytes:
                misses.append(f"peak RSS {_mib(peak)}")
        return not misses, ", ".join(misses)


@dataclass(frozen=True)
class Case:
    """One measured operation, e.g. "decode MST node"."""

    name: str
    what: str
    contenders: tuple[Contender, ...]
    target: Target | None = None
    max_reps: int | None = None


@dataclass(frozen=True)
class Group:
    """A named family of cases built lazily by ``build``."""

    name: str
    title: str
    order: int
    build: Builder


GROUPS: dict[str, Group] = {}


def register(name: str, title: str, order: int) -> Callable[[Builder], Builder]:
    """Decorator: register ``build`` as the group ``name`` (``order`` sorts groups)."""

    def deco(build: Builder) -> Builder:
        if name in GROUPS:
            raise ValueError(f"benchmark group {name!r} registered twice")
        GROUPS[name] = Group(name, title, order, build)
        return build

    return deco


def load_groups() -> list[Group]:
    """Import every ``bench/cases_*.py`` module and return the groups in order."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for module in pkgutil.iter_modules([package_dir]):
        if module.name.startswith("cases_"):
            importlib.import_module(f"bench.{module.name}")
    return sorted(GROUPS.values(), key=lambda g: (g.order, g.name))


# -- runner helpers -----------------------------------------------------------------------------------


def call_repeat(fn: Callable[[Any], object], arg: Any) -> Runner:
    """Runner calling ``fn(arg)`` ``n`` times."""

    def run(n: int) -> None:
        for _ in repeat(None, n):
            fn(arg)

    return run


def call_cycle(fn: Callable[..., object], argsets: Sequence[tuple[Any, ...]]) -> Runner:
    """Runner calling ``fn(*args)`` ``n`` times, cycling through ``argsets``."""
    pool = tuple(argsets)

    def run(n: int) -> None:
        for args in islice(cycle(pool), n):
            fn(*args)

    return run


def expect(condition: bool, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` (survives ``python -O``)."""
    if not condition:
        raise AssertionError(message)


# -- timing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How long and how often to measure, and which implementations."""

    reps: int = 7
    target: float = 0.2
    impls: frozenset[str] | None = None
    quick: bool = False


QUICK = Config(reps=3, target=0.01, quick=True)

_ACTIVE: list[Config] = [Config()]


def active_config() -> Config:
    """The configuration of the current run (builders use it to size their fixtures)."""
    return _ACTIVE[-1]


@dataclass
class Result:
    """Measurements of one contender in one case."""

    group: str
    case: str
    impl: str
    label: str
    status: str = "ok"
    note: str = ""
    ops_per_sample: int = 0
    samples: list[float] = field(default_factory=list)
    ratio: float | None = None
    target: str = ""
    target_met: bool | None = None
    target_miss: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0

    @property
    def low(self) -> float:
        return min(self.samples) if self.samples else 0.0

    @property
    def high(self) -> float:
        return max(self.samples) if self.samples else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "case": self.case,
            "impl": self.impl,
            "label": self.label,
            "status": self.status,
            "note": self.note,
            "ops_per_s": self.median,
            "min_ops_per_s": self.low,
            "max_ops_per_s": self.high,
            "ops_per_sample": self.ops_per_sample,
            "samples_ops_per_s": self.samples,
            "ratio_atrepo_over_this": self.ratio,
            "target": self.target or None,
            "target_met": self.target_met,
            "metrics": self.metrics,
        }


def _timed(run: Runner, n: int) -> float:
    """Seconds for ``run(n)`` with the garbage collector paused."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        run(n)
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def _calibrate(run: Runner, target: float) -> int:
    """Operations per sample so that one sample takes about ``target`` seconds."""
    n = 1
    while True:
        elapsed = _timed(run, n)
        if elapsed >= target * 0.2 or n >= 1 << 32:
            return max(1, round(n * target / max(elapsed, 1e-9)))
        n *= 10 if elapsed < target * 0.02 else 2


def _error_note(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


def run_case(group: Group, case: Case, cfg: Config) -> list[Result]:
    """Set up, calibrate and measure every selected contender of ``case`` (interleaved)."""
    results: list[Result] = []
    live: list[tuple[Result, Runner]] = []
    probes: list[tuple[Result, Callable[[], dict[str, float]]]] = []
    for contender in case.contenders:
        if cfg.impls is not None and contender.impl not in cfg.impls:
            continue
        res = Result(group.name, case.name, contender.impl, contender.label, note=contender.note)
        results.append(res)
        if contender.unsupported is not None or contender.setup is None:
            res.status = "unsupported"
            res.note = contender.unsupported or "no such operation"
            continue
        missing = [m for m in contender.needs if importlib.util.find_spec(m) is None]
        if missing:
            res.status = "not installed"
            res.note = "not installed: " + ", ".join(missing)
            continue
        try:
            runner = contender.setup()
            res.ops_per_sample = contender.ops or _calibrate(runner, cfg.target)
        except Exception as exc:
            res.status = "error"
            res.note = _error_note(exc)
            continue
        live.append((res, runner))
        if contender.probe is not None:
            probes.append((res, contender.probe))

    reps = min(cfg.reps, case.max_reps) if case.max_reps else cfg.reps
    for rep in range(reps):
        k = rep % len(live) if live else 0
        for res, runner in live[k:] + live[:k]:
            if res.status != "ok":
                continue
            try:
                elapsed = _timed(runner, res.ops_per_sample)
            except Exception as exc:
                res.status = "error"
                res.note = _error_note(exc)
                res.samples.clear()
                continue
            res.samples.append(res.ops_per_sample / max(elapsed, 1e-9))

    for res, probe in probes:
        if res.status != "ok":
            continue
        try:
            res.metrics.update(probe())
        except Exception as exc:
            res.note = "; ".join(filter(None, (res.note, "probe failed: " + _error_note(exc))))

    ours = next((r for r in results if r.impl == OURS and r.samples), None)
    for res in results:
        if ours is not None and res.samples and len(res.samples) == len(ours.samples):
            # Paired by round: both samples of a round ran back to back, so
            # their ratio cancels slow drifts in machine load.
            res.ratio = statistics.median(o / p for o, p in zip(ours.samples, res.samples, strict=True))
    if case.target is not None:
        for res in results:
            if res.impl == OURS:
                res.target = case.target.describe()
                res.target_met, res.target_miss = case.target.verdict(res)
    return results


def run_groups(groups: Sequence[Group], cfg: Config, log: TextIO | None = None) -> list[Result]:
    """Build and run every case of ``groups``; progress goes to ``log``."""
    results: list[Result] = []
    _ACTIVE.append(cfg)
    try:
        for group in groups:
            _run_group(group, cfg, results, log)
    finally:
        _ACTIVE.pop()
    return results


def _run_group(group: Group, cfg: Config, results: list[Result], log: TextIO | None) -> None:
    try:
        cases = group.build()
    except Exception as exc:
        results.append(Result(group.name, "(build)", OURS, OURS, "error", _error_note(exc)))
        if log is not None:
            print(f"[{group.name}] building cases failed: {_error_note(exc)}", file=log, flush=True)
        return
    for case in cases:
        start = time.perf_counter()
        case_results = run_case(group, case, cfg)
        results.extend(case_results)
        if log is not None:
            shown = ", ".join(
                f"{r.label} {_si(r.median)}/s" if r.samples else f"{r.label} ({r.status})"
                for r in case_results
            )
            took = time.perf_counter() - start
            print(f"[{group.name}] {case.name}: {shown}  ({took:.1f} s)", file=log, flush=True)


# -- peak memory in a fresh process -------------------------------------------------------------------

_CHILD_CODE = "import sys; from bench.harness import child_main; child_main(sys.argv[1:])"


class ServerProcess:
    """A server process a benchmark started into ``self.proc``: its pid, and a stop that escalates.

    ``stop`` sends SIGTERM (our servers drain and close their subscribers), waits ``stop_timeout``
    seconds, then kills (:meth:`_kill`: the process; a subclass may kill its whole group).
    """

    proc: subprocess.Popen[Any] | None = None
    stop_timeout: float = 30.0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()

    def _kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from /proc (the server benchmarks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcRow(NamedTuple):
    """One process as /proc/PID/stat has it: its command name, parent, and CPU seconds.

    ``cpu_s`` is user + system time including ``cutime``/``cstime``: the time of
    children that exited and were reaped, so a worker killed and restarted (or a
    PostgreSQL backend that ended) still counts, in its parent.
    """

    name: str
    ppid: int
    cpu_s: float


def proc_table() -> dict[int, ProcRow]:
    """Every process on the machine, read once from /proc (one that exits meanwhile is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    rows: dict[int, ProcRow] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        rows[int(name)] = ProcRow(stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[1]), cpu)
    return rows


def tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and every process below it (a supervisor and its workers), from /proc."""
    table = proc_table()
    family, grew = {root}, True
    while grew:
        grew = False
        for pid, row in table.items():
            if row.ppid in family and pid not in family:
                family.add(pid)
                grew = True
    return sum(table[pid].cpu_s for pid in family if pid in table)


def proc_status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``VmHWM``, ``VmRSS``); 0 when absent."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child_main(argv: Sequence[str]) -> None:
    """Child side of :func:`measure_in_child`: call ``module.function(*args)``, print JSON."""
    module, function, *args = argv
    fn = getattr(importlib.import_module(module), function)
    out = dict(fn(*args) or {})
    out["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(out))


def measure_in_child(module: str, function: str, *args: str, timeout: float = 900) -> dict[str, float]:
    """Run ``module.function(*args)`` in a fresh interpreter; its metrics plus its raw peak RSS.

    The function returns a dict of numbers (may be empty); ``peak_rss_bytes`` is
    the child's VmHWM read at its end. Nothing is subtracted.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD_CODE, module, function, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"child {function} failed: {lines[-1]}")
    return {k: float(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


# -- report -------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """Python, OS, CPU and library versions of this run."""
    versions: dict[str, str] = {}
    for dist in REPORTED_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "loadavg_at_start": loadavg(),
        "versions": versions,
    }


def _si(value: float) -> str:
    """Compact ops/s figure: 987, 12.3k, 456k, 1.23M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _mib(value: float) -> str:
    """Bytes as MiB: 48.2 MiB."""
    return f"{value / 1048576:.1f} MiB"


def _target_cell(res: Result) -> str:
    if not res.target:
        return ""
    verdict = {True: "met", False: "MISSED", None: "unknown"}[res.target_met]
    return f"{res.target}: {verdict}" + (f" ({res.target_miss})" if res.target_miss else "")


def _memory_cell(res: Result) -> str:
    peak = res.metrics.get("peak_rss_bytes")
    if peak is None:
        return ""
    base = res.metrics.get("baseline_rss_bytes")
    return _mib(peak) + (f" (import {_mib(base)})" if base is not None else "")


def render_table(results: Sequence[Result], info: dict[str, Any], cfg: Config, elapsed: float) -> str:
    """The human-readable report."""
    head = [
        f"atrepo benchmarks: {info['implementation']} {info['python']} on {info['platform']}",
        f"cpu: {info['cpu_model']}; cpu_count={info['cpu_count']} usable={info['cpus_usable']}; "
        f"loadavg at start {' '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"method: median of {cfg.reps} samples of ~{cfg.target:g} s each per row, contenders interleaved "
        "round-robin, gc paused during samples"
        + (" (QUICK smoke run: figures are rough)" if cfg.quick else ""),
        "",
    ]
    show_target = any(r.target for r in results)
    show_memory = any("peak_rss_bytes" in r.metrics for r in results)
    columns = ["group", "case", "implementation", "ops/s (median)", "spread (min-max)", "atrepo x"]
    if show_target:
        columns.append("target (atrepo)")
    if show_memory:
        columns.append("peak RSS (import only)")
    columns.append("note")
    rows: list[list[str]] = []
    previous_case = None
    for res in results:
        key = (res.group, res.case)
        group, case = (res.group, res.case) if key != previous_case else ("", "")
        previous_case = key
        if res.samples:
            median = f"{res.median:,.0f}"
            spread = f"{_si(res.low)}-{_si(res.high)}"
            ratio = f"{res.ratio:.2f}" if res.ratio is not None else "-"
        else:
            median, spread, ratio = "-", "-", "-"
        row = [group, case, res.label, median, spread, ratio]
        if show_target:
            row.append(_target_cell(res))
        if show_memory:
            row.append(_memory_cell(res))
        row.append(res.note)
        rows.append(row)
    widths = [
        max(len(col), *(len(row[i]) for row in rows)) if rows else len(col) for i, col in enumerate(columns)
    ]
    right = {3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    body = [line(columns), line(["-" * w for w in widths])]
    for row in rows:
        if row[0] and len(body) > 2:
            body.append("")
        body.append(line(row))
    foot = [
        "",
        "atrepo x = median over rounds of atrepo ops/s / this row's ops/s in the same round "
        "(above 1: atrepo is faster).",
    ]
    fewer = sorted(
        {(r.group, r.case, len(r.samples)) for r in results if r.samples and len(r.samples) != cfg.reps}
    )
    if fewer:
        foot.append(
            "fixed-size cases (one sample = one whole run over the fixture): "
            + "; ".join(f"{case} {n} samples" for _, case, n in fewer)
        )
    if show_memory:
        foot.append(
            "peak RSS = VmHWM of a fresh process that did the operation once (raw, nothing subtracted); "
            "import only = a fresh process that only imported the library."
        )
    foot.append(
        "loadavg at end " + " ".join(f"{x:.2f}" for x in loadavg()) + f"; total run time {elapsed:.1f} s"
    )
    return "\n".join(head + body + foot)
