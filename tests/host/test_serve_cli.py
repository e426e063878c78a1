"""``atrepo serve`` as a real process: starts, answers, creates accounts, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[str]) -> dict[str, str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"atrepo serve exited with {proc.returncode}: {proc.stderr and proc.stderr.read()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/xrpc/_health", timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def atrepo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atrepo", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def served(tmp_path: Path, database: str | None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``atrepo serve`` on each backend (``--database`` on PostgreSQL)."""
    port, plc_port = free_port(), free_port()
    env = {**os.environ, "ATREPO_LOG_FORMAT": "json"}
    backend = [] if database is None else ["--database", database]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atrepo",
            "serve",
            "--port",
            str(port),
            "--plc-port",
            str(plc_port),
            "--data",
            str(tmp_path / "data"),
            *backend,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_starts_creates_accounts_and_stops_on_sigterm(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = served
    assert wait_healthy(url, proc)["version"]

    done = atrepo("account", "create", "--url", url, "--handle", "alice.test", "--password", "pw", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["handle"] == "alice.test" and out["did"].startswith("did:plc:")

    done = atrepo("account", "create", "--url", url, "--handle", "alice.test", "--password", "pw")
    assert done.returncode == 1
    assert "HandleNotAvailable" in done.stderr

    done = atrepo("account", "create", "--url", url, "--handle", "bob.test", "--password", "pw")
    assert done.returncode == 0 and done.stdout.startswith("created bob.test did:plc:")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    assert f"listening on {url}" in stdout
    assert "jwt_secret" in stderr and "admin_password" in stderr  # the effective configuration
    messages = [json.loads(line)["message"] for line in stderr.splitlines() if line.startswith("{")]
    assert "shutting down" in messages and messages[-1] == "stopped"


def test_account_create_without_a_host(tmp_path: Path) -> None:
    done = atrepo(
        "account",
        "create",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--handle",
        "a.test",
        "--password",
        "x",
    )
    assert done.returncode == 1
    assert "cannot reach the host" in done.stderr
