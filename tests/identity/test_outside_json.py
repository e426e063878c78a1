"""Hostile JSON from directories, did:web hosts and PLC clients: typed errors, never a traceback.

Regression: deeply nested JSON from a directory made ``fetch_verified_log``
(and so ``atrepo plc verify``) raise ``RecursionError``; every JSON parse of
outside data now goes through ``core.jsonio.parse_outside_json``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from atrepo.core.errors import InvalidDIDDocument, InvalidPLCOperation, ResolutionError
from atrepo.identity.document import parse_did_document_bytes
from atrepo.identity.plc.client import fetch_verified_log, submit_operation
from atrepo.identity.plc.server import create_app
from conftest import serve

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
DEEP = b"[" * 200_000 + b"]" * 200_000
#: Parses in Python's scanner but nests deeper than anything atrepo accepts.
NESTED = b"[" * 500 + b"]" * 500
HOSTILE = {
    "deep": DEEP,
    "nested": NESTED,
    "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "not-utf8": b'["\xff\xfe"]',
    "utf16": '["x"]'.encode("utf-16"),
    "nan": b"[NaN]",
    "infinity": b'{"a": -Infinity}',
    "garbage": b"{not json",
    "huge-int": b"[" + b"9" * 5000 + b"]",
}


def _directory_answering(body: bytes, status: int = 200) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_audit_log_from_hostile_directory(body: bytes, http: aiohttp.ClientSession) -> None:
    async with serve(_directory_answering(body)) as base:
        with pytest.raises(ResolutionError, match=f"{DID}: audit log: "):
            await fetch_verified_log(http, base, DID)


@pytest.mark.parametrize("body", [DEEP, NESTED, b"[NaN]"], ids=["deep", "nested", "nan"])
async def test_submit_refusal_with_hostile_body(body: bytes, http: aiohttp.ClientSession) -> None:
    async with serve(_directory_answering(body, status=400)) as base:
        with pytest.raises(InvalidPLCOperation, match="HTTP 400") as info:
            await submit_operation(http, base, DID, {"type": "plc_tombstone"})
    assert len(str(info.value)) < 400


async def test_submit_refusal_message_is_capped(http: aiohttp.ClientSession) -> None:
    body = b'{"message": ["' + b"x" * 20_000 + b'"]}'
    async with serve(_directory_answering(body, status=400)) as base:
        with pytest.raises(InvalidPLCOperation) as info:
            await submit_operation(http, base, DID, {"type": "plc_tombstone"})
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_did_document_bytes(body: bytes) -> None:
    with pytest.raises(InvalidDIDDocument, match="DID document: "):
        parse_did_document_bytes(body, max_bytes=10_000_000)


async def test_directory_server_refuses_hostile_bodies(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with serve(create_app(tmp_path / "plc")) as base:
        for body in (NESTED, b'{"type": NaN}', b"\xff{}"):
            async with http.post(f"{base}/{DID}", data=body) as resp:
                answer = await resp.json()
                assert resp.status == 400 and "not JSON" in answer["message"], answer


@pytest.fixture
def hostile_directory() -> Iterator[str]:
    """A directory in a background loop whose audit log is 200,000 levels deep."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(_directory_answering(DEEP), access_log=None)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    url = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_plc_verify_cli_prints_an_error_not_a_traceback(hostile_directory: str) -> None:
    """The reported symptom, through the console script."""
    atrepo = str(Path(sys.executable).parent / "atrepo")
    proc = subprocess.run(
        [atrepo, "plc", "verify", DID, "--plc", hostile_directory],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc
    assert b"Traceback" not in proc.stderr and b"ResolutionError" in proc.stderr, proc.stderr
