"""``atrepo did | handle | plc`` against servers running in a background event loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from typer.testing import CliRunner

from atrepo.cli.identity import did_app, handle_app, plc_app
from atrepo.core.errors import ResolutionError
from atrepo.core.keys import PrivateKey
from atrepo.identity.plc.server import create_app
from conftest import DNSServer

T = TypeVar("T")
runner = CliRunner()


class LoopThread:
    """An event loop in a thread, so sync CLI commands can call real servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, DNSServer, tuple[str, int]]]:
    background = LoopThread()
    app_runner = web.AppRunner(create_app(tmp_path / "plc"), access_log=None)
    dns = DNSServer()

    async def start() -> tuple[str, Any, tuple[str, int]]:
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", 0)
        await site.start()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: dns, local_addr=("127.0.0.1", 0))
        return (
            f"http://127.0.0.1:{app_runner.addresses[0][1]}",
            transport,
            transport.get_extra_info("sockname"),
        )

    async def stop(transport: Any) -> None:
        transport.close()
        await app_runner.cleanup()

    url, transport, sockname = background.run(start())
    try:
        yield url, dns, (sockname[0], sockname[1])
    finally:
        background.run(stop(transport))
        background.stop()


def key_file(tmp_path: Path, name: str, curve: str = "k256") -> tuple[Path, PrivateKey]:
    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    path = tmp_path / name
    path.write_text(f"# test key\n{key.to_multibase()}\n")
    return path, key


def invoke_json(app: Any, args: list[str]) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def test_create_update_resolve_verify_tombstone(
    tmp_path: Path, servers: tuple[str, DNSServer, tuple[str, int]]
) -> None:
    plc, dns, nameserver = servers
    k1_path, k1 = key_file(tmp_path, "k1.key")
    k2_path, k2 = key_file(tmp_path, "k2.key", "p256")
    created = invoke_json(
        plc_app,
        [
            "create",
            "--key",
            str(k1_path),
            "--plc",
            plc,
            "--handle",
            "Alice.test",
            "--pds",
            "https://pds.example.com",
        ],
    )
    did = created["did"]
    assert did.startswith("did:plc:") and created["cid"].startswith("bafyrei")

    ident = invoke_json(did_app, ["resolve", did, "--plc", plc])
    assert ident["signingKey"] == k1.public_key.did_key()
    assert ident["pds"] == "https://pds.example.com" and ident["handle"] == "alice.test"
    human = runner.invoke(did_app, ["resolve", did, "--plc", plc])
    assert human.exit_code == 0 and "alice.test" in human.output

    invoke_json(plc_app, ["update", did, "--key", str(k1_path), "--plc", plc, "--signing-key", str(k2_path)])
    assert invoke_json(did_app, ["resolve", did, "--plc", plc])["signingKey"] == k2.public_key.did_key()

    refused = runner.invoke(plc_app, ["update", did, "--key", str(k2_path), "--plc", plc])
    assert refused.exit_code == 2 and "rotation keys" in refused.output

    dns.records["_atproto.alice.test"] = [[f"did={did}".encode()]]
    ns = f"{nameserver[0]}:{nameserver[1]}"
    resolved = invoke_json(handle_app, ["resolve", "alice.test", "--dns", ns, "--plc", plc, "--dev"])
    assert resolved["did"] == did and resolved["verified"] is True
    invoke_json(plc_app, ["update", did, "--key", str(k1_path), "--plc", plc, "--handle", "bob.test"])
    resolved = invoke_json(handle_app, ["resolve", "alice.test", "--dns", ns, "--plc", plc, "--dev"])
    assert resolved["verified"] is False and "claims bob.test" in resolved["reason"]

    report = invoke_json(plc_app, ["verify", did, "--plc", plc])
    assert report["ok"] and report["operations"] == 3 and report["data"]["alsoKnownAs"] == ["at://bob.test"]

    invoke_json(plc_app, ["tombstone", did, "--key", str(k1_path), "--plc", plc])
    gone = runner.invoke(did_app, ["resolve", did, "--plc", plc])
    assert isinstance(gone.exception, ResolutionError)
    assert invoke_json(plc_app, ["verify", did, "--plc", plc])["tombstoned"] is True


def test_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.key").write_text("# nothing\n")
    result = runner.invoke(
        plc_app, ["create", "--key", str(tmp_path / "empty.key"), "--plc", "http://127.0.0.1:9"]
    )
    assert result.exit_code != 0
    result = runner.invoke(plc_app, ["create", "--key", str(tmp_path / "missing.key")])
    assert result.exit_code == 2
    k_path, _ = key_file(tmp_path, "k.key")
    result = runner.invoke(plc_app, ["create", "--key", str(k_path), "--pds", "https://x.com/path"])
    assert result.exit_code == 2 and "path" in result.output
    result = runner.invoke(handle_app, ["resolve", "a.test", "--dns", "nope"])
    assert result.exit_code == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_plc_serve_runs_a_directory(tmp_path: Path) -> None:
    port = _free_port()
    code = "import sys; from atrepo.cli.identity import plc_app; plc_app(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, "serve", "--port", str(port), "--data", str(tmp_path / "data")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("plc serve did not start")
                time.sleep(0.05)
        k_path, _ = key_file(tmp_path, "k.key")
        created = invoke_json(plc_app, ["create", "--key", str(k_path), "--plc", url])
        assert invoke_json(did_app, ["resolve", created["did"], "--plc", url])["did"] == created["did"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert "accepted plc_operation" in output
    assert (tmp_path / "data" / "plc.sqlite3").exists()
