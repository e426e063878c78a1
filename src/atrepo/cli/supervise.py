"""One command, several worker processes: start them, restart any that dies, stop them all on a signal.

``atrepo sync --workers N`` (and the servers' ``--workers``) run this in the
parent process. Each worker is the same command with its own arguments
(``--partition I/N``, a port, ...) and prints one JSON line when it is ready,
whose ``listening`` names its URL. A worker that exits unexpectedly (a
crash, ``kill -9``) is started again after a second, then with a growing
pause while it keeps failing; SIGTERM or SIGINT stop the workers (SIGTERM,
then SIGKILL after 30 s) and end the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from .signals import stop_on_signals

__all__ = ["child_args", "emit", "supervise"]

#: Seconds a worker has to print its ready line.
START_TIMEOUT_S: Final = 120.0
#: Seconds a worker has to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 30.0


def emit(as_json: bool, doc: dict[str, Any], text: str) -> None:
    """One status line on stdout: the JSON document or the sentence."""
    print(json.dumps(doc) if as_json else text, flush=True)


def child_args(
    argv: Sequence[str], drop: Sequence[str] = ("--workers", "--port"), flags: Sequence[str] = ("--json",)
) -> list[str]:
    """A command's arguments for a worker: without the options in ``drop`` (and their values) or ``flags``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop:
            skip = "=" not in arg
            continue
        if name in flags:
            continue
        out.append(arg)
    return out


async def supervise(
    command: Callable[[int], list[str]],
    count: int,
    *,
    label: str,
    name: Callable[[int], str],
    as_json: bool,
    key: str = "worker",
) -> None:
    """Run ``count`` workers (``command(i)`` is worker i's argv after ``python -m atrepo``) until a signal.

    ``label`` starts each line printed (``atrepo sync``); ``name(i)`` names a
    worker in them and, under ``key``, in the JSON listing.
    """
    procs: dict[int, asyncio.subprocess.Process] = {}
    urls: dict[int, str] = {}

    async def spawn(index: int) -> None:
        cmd = [sys.executable, "-m", "atrepo", *command(index)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            if not line:
                code = await proc.wait()
                raise RuntimeError(f"worker {name(index)} exited at start (code {code})")
            doc = json.loads(line)
            urls[index] = doc["listening"]
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        procs[index] = proc

    def listing() -> list[dict[str, Any]]:
        return [{key: name(i), "listening": urls[i], "pid": procs[i].pid} for i in sorted(procs)]

    try:
        for index in range(count):
            await spawn(index)
    except BaseException:
        for proc in procs.values():
            proc.kill()
        raise
    emit(
        as_json,
        {"ok": True, "workers": listing()},
        f"{label}: " + ", ".join(f"worker {w[key]} (pid {w['pid']}) on {w['listening']}" for w in listing()),
    )
    with stop_on_signals() as stop:
        while not stop.is_set():
            waits: dict[asyncio.Future[Any], int] = {
                asyncio.ensure_future(p.wait()): i for i, p in procs.items()
            }
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
            for task in [stopping, *waits]:
                if task not in done:
                    task.cancel()
            if stop.is_set():
                break
            for task in done:
                which = waits.get(task)
                if which is None:
                    continue
                print(
                    f"{label}: worker {name(which)} exited (code {task.result()}); restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                procs.pop(which, None)
                delay = 1.0
                while not stop.is_set():
                    await asyncio.sleep(delay)
                    try:
                        await spawn(which)
                        break
                    except (RuntimeError, TimeoutError, ValueError, KeyError, OSError) as exc:
                        print(f"{label}: worker {name(which)} did not start: {exc}", file=sys.stderr)
                        delay = min(30.0, delay * 2)
            if as_json:
                emit(as_json, {"ok": True, "workers": listing()}, "")
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    emit(as_json, {"ok": True, "stopped": True}, f"{label}: every worker stopped")
