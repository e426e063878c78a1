"""Run one fuzz target: ``python -m fuzz.run TARGET [--seconds N] [--engine ...]``.

Engines:

* ``atheris`` (coverage-guided libFuzzer, when installed): the atrepo modules
  are instrumented on import; new inputs go to ``fuzz/work/<target>/`` and the
  seed corpus ``tests/fuzz/corpus/<target>/`` is only read.
* ``mutate`` (no dependencies, deterministic for a ``--seed``): mutates seeds
  and keeps every input whose outcome (accepted, or the error and the start of
  its message) was new: a cheap stand-in for coverage feedback.

Both enforce the same limits: ``--budget`` seconds per input (a slower input
is a crash) and ``--memory-mb`` of address space beyond what the process holds
at start (a ``MemoryError`` is a crash). A crash writes the input to
``fuzz/work/artifacts/`` and exits non-zero; ``--replay FILE...`` runs files
(or directories of them) through the target once, to reproduce one.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

WORK = Path(__file__).resolve().parent / "work"


class InputTimeout(BaseException):
    """One input ran past its time budget (BaseException: code under test cannot swallow it)."""


def _limit_memory(extra_mb: int) -> None:
    """Cap the address space at what the process maps now plus ``extra_mb``."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * page
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _inputs(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def _save_crash(data: bytes) -> Path:
    folder = WORK / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise InputTimeout


def run_one(entry: Callable[[bytes], None], data: bytes, budget: float) -> None:
    """Run one input under the time budget; exceptions propagate (they are crashes)."""
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        entry(data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# --- the mutation engine -------------------------------------------------------------

#: Most inputs the mutation engine keeps to mutate further.
_MAX_POOL = 10_000

_INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x17",
    b"\x18",
    b"\x19\xff\xff",
    b"\x1a\xff\xff\xff\xff",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xf6",
    b"\xa0",
    b"\x80",
    b"\xd8\x2a",
    b"\n",
    b"/",
    b".",
    b"..",
    b'"',
    b"[",
    b"{",
    b"\\u0000",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
]


def mutate(data: bytes, pool: list[bytes], rng: random.Random, max_len: int) -> bytes:
    """A few random edits of ``data``: flips, inserts, deletes, repeats, splices, magic values."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        n = len(buf)
        pick = rng.randrange(10)
        at = rng.randrange(n + 1)
        if pick == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif pick == 1 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif pick == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif pick == 3 and n:
            del buf[at : at + rng.randint(1, 16)]
        elif pick == 4 and n:
            start = rng.randrange(n)
            chunk = buf[start : start + rng.randint(1, 64)]
            buf[at:at] = chunk * rng.choice((1, 2, 4, 16, 256))
        elif pick == 5:
            buf[at:at] = rng.choice(_INTERESTING)
        elif pick == 6 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:at] + other[cut:] if rng.random() < 0.5 else bytearray(other[:cut]) + buf[at:]
        elif pick == 7 and n:
            del buf[at:]
        elif pick == 8 and n >= 2:
            i, j = sorted(rng.sample(range(n), 2))
            buf[i], buf[j] = buf[j], buf[i]
        elif n:
            # bump a byte by a small amount (lengths, varints, prefix counts)
            i = rng.randrange(n)
            buf[i] = (buf[i] + rng.choice((-2, -1, 1, 2))) % 256
    return bytes(buf[:max_len])


def fuzz_mutate(
    entry: Callable[[bytes], None],
    seeds: list[bytes],
    *,
    seconds: float,
    budget: float,
    seed: int,
    max_len: int,
    log: Callable[[str], None] = print,
) -> int:
    """Mutation loop for ``seconds``; returns the number of inputs run. Crashes propagate."""
    from fuzz import harness

    outcomes: list[str] = []
    harness.OUTCOMES = outcomes
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    seen: set[str] = set()
    count = 0
    deadline = time.monotonic() + seconds
    current = b""
    try:
        for data in pool:
            current = data
            run_one(entry, data, budget)
            count += 1
        while time.monotonic() < deadline:
            base = rng.choice(pool)
            current = mutate(base, pool, rng, max_len)
            outcomes.clear()
            run_one(entry, current, budget)
            count += 1
            # Feedback: keep inputs that ended differently from all before them.
            key = "|".join(outcomes)
            if key not in seen and len(pool) < _MAX_POOL:
                seen.add(key)
                pool.append(current)
    except BaseException:
        path = _save_crash(current)
        log(f"crash after {count} inputs; input saved to {path}")
        raise
    log(f"{count} inputs in {seconds:g} s, {len(pool)} in pool, {len(seen)} outcomes")
    return count


# --- atheris -------------------------------------------------------------------------


def fuzz_atheris(
    name: str, seeds_dir: Path, *, seconds: int, budget: float, memory_mb: int, max_len: int
) -> None:
    """libFuzzer over the target, atrepo instrumented; exits the process when done."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["atrepo", "fuzz"]):
        from fuzz import harness

        entry = harness.load(name)
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    artifacts = WORK / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-timeout={max(1, round(budget))}",
        f"-rss_limit_mb={memory_mb}",
        f"-max_len={max_len}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(work),
        str(seeds_dir),
    ]
    atheris.Setup(argv, entry)
    atheris.Fuzz()


# --- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from fuzz.harness import TARGETS, corpus_dir

    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per input (default 2)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space beyond start (MB)")
    parser.add_argument("--max-len", type=int, default=65_536, help="longest generated input (bytes)")
    parser.add_argument("--seed", type=int, default=0, help="mutation engine seed (default 0)")
    parser.add_argument("--replay", nargs="*", type=Path, help="run these files/dirs once and stop")
    args = parser.parse_args(argv)

    _limit_memory(args.memory_mb)
    seeds_dir = corpus_dir(args.target)
    if args.replay is not None:
        from fuzz.harness import load

        entry = load(args.target)
        signal.signal(signal.SIGALRM, _on_alarm)
        paths = list(_inputs(args.replay or [seeds_dir]))
        for path in paths:
            try:
                run_one(entry, path.read_bytes(), args.budget)
            except BaseException:
                print(f"crash: {path}", file=sys.stderr)
                traceback.print_exc()
                return 1
        print(f"{len(paths)} inputs replayed, no crash")
        return 0

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") is not None else "mutate"
    if engine == "atheris":
        fuzz_atheris(
            args.target,
            seeds_dir,
            seconds=max(1, round(args.seconds)),
            budget=args.budget,
            memory_mb=args.memory_mb,
            max_len=args.max_len,
        )
        return 0
    from fuzz.harness import load

    entry = load(args.target)
    signal.signal(signal.SIGALRM, _on_alarm)
    seeds = [p.read_bytes() for p in _inputs([seeds_dir])]
    try:
        fuzz_mutate(
            entry, seeds, seconds=args.seconds, budget=args.budget, seed=args.seed, max_len=args.max_len
        )
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
