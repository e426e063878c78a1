"""Real servers on 127.0.0.1 for the identity tests, each stopped when its test ends."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord

#: Every identity test gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@dataclass
class FakeClock:
    """Milliseconds that only move when a test says so."""

    ms: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@dataclass
class MonotonicFake:
    """Seconds for resolver caches, moved by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yield its base URL; always clean up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monotonic() -> MonotonicFake:
    return MonotonicFake()


class DNSServer(asyncio.DatagramProtocol):
    """Authoritative-ish TXT answers on a loopback port, UDP and TCP (dnslib codec).

    ``records`` maps a lower-case name (no trailing dot) to TXT records, each a
    list of chunks. ``truncate_udp`` sets TC on UDP answers to force TCP;
    ``fail`` answers SERVFAIL; ``silent`` never answers.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[list[bytes]]] = {}
        self.truncate_udp = False
        self.fail = False
        self.silent = False
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def answer(self, data: bytes, *, udp: bool) -> bytes | None:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(name)
        if self.silent:
            return None
        reply = request.reply()
        if self.fail:
            reply.header.rcode = RCODE.SERVFAIL
        elif name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif udp and self.truncate_udp:
            reply.header.tc = 1
        else:
            for chunks in self.records[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return bytes(reply.pack())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        out = self.answer(data, udp=True)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    async def tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            out = self.answer(await reader.readexactly(length), udp=False)
            if out is not None:
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[DNSServer, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    server = DNSServer()
    # DNS needs UDP and TCP on one port number: the OS picks a free UDP port, and
    # that number's TCP side may be taken (another test's connection), so retry.
    for attempt in range(20):
        transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(server.tcp_client, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
            if attempt == 19:
                raise
    try:
        yield server, ("127.0.0.1", port)
    finally:
        transport.close()
        tcp.close()
        await tcp.wait_closed()
