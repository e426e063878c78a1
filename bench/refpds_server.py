"""The reference PDS (``@atproto/pds``) as a benchmark peer: one process on free loopback ports.

It runs from an installed copy of ``/work/shared/refpds`` (``cp -r``, then its ``install.sh``) with that
copy's ``run-pds.mjs``: development settings, rate limits off, logs off, and by default its in-process
mock did:plc directory (``--plc mock``), which only account creation touches; ``plc=URL`` names a real
one instead (``bench.relay_bench`` needs DIDs other servers resolve). The benchmarks that compare our
servers with it (``bench.host_window_ab``, ``bench.firehose_fanout``, ``bench.relay_bench``) start it
through this class, so all of them start it the same way.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from bench.harness import ServerProcess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RefPdsServer(ServerProcess):
    """``node run-pds.mjs --fresh`` on a free port with its data in ``data``; ``start``, ``url``, ``stop``."""

    stop_timeout = 20.0

    def __init__(self, directory: Path, data: Path, log: Path, *, plc: str = "mock") -> None:
        self.directory, self.data, self.log, self.plc = Path(directory), Path(data), Path(log), plc
        node = self.directory / "node_modules" / ".bin" / "node"
        if not node.exists():
            raise SystemExit(f"{self.directory}: not an installed refpds copy (see its README.md)")
        self.node = node
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 120) -> None:
        self.port = _free_port()
        cmd = [str(self.node), "run-pds.mjs", "--fresh", "--port", str(self.port), "--data", str(self.data)]
        cmd += ["--plc", self.plc]
        if self.plc == "mock":
            cmd += ["--plc-port", str(_free_port())]
        seen = self.log.stat().st_size if self.log.exists() else 0  # a READY of an earlier start
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.directory, stdout=log, stderr=log, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # run-pds.mjs prints READY once it listens
            if self.proc.poll() is not None:
                raise RuntimeError(f"the reference PDS exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if any(line.startswith(b"READY") for line in self.log.read_bytes()[seen:].splitlines()):
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the reference PDS did not start")
