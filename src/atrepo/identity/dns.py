"""A small async DNS TXT client (UDP, TCP on truncation) built on dnslib.

Handle resolution needs one query type against one nameserver; a full
resolver library would add threads or a C dependency for that. The nameserver
is explicit (host, port) so tests and isolated deployments can point it at a
server of their own; by default it is the first one in ``/etc/resolv.conf``.
Answers are matched on query id, source address and question name.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from pathlib import Path
from typing import Final

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from atrepo.core.errors import ResolutionError
from atrepo.identity import limits

__all__ = ["DEFAULT_NAMESERVER", "Nameserver", "query_txt", "system_nameserver"]

Nameserver = tuple[str, int]
DEFAULT_NAMESERVER: Final[Nameserver] = ("127.0.0.1", 53)
_NXDOMAIN: Final = 3


def system_nameserver(resolv_conf: str | Path = "/etc/resolv.conf") -> Nameserver:
    """The first ``nameserver`` of resolv.conf, port 53 (fallback: 127.0.0.1)."""
    try:
        text = Path(resolv_conf).read_text()
    except OSError:
        return DEFAULT_NAMESERVER
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return (parts[1].split("%")[0], 53)
    return DEFAULT_NAMESERVER


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: int, qname: str, answer: asyncio.Future[DNSRecord]) -> None:
        self.qid = qid
        self.qname = qname
        self.answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.answer.done() or len(data) > limits.MAX_DNS_RESPONSE_BYTES:
            return
        try:
            record = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error):
            return  # garbage or spoofing attempts are ignored; the timeout decides
        if (
            record.header.id == self.qid
            and record.q is not None
            and str(record.q.qname).lower() == self.qname
        ):
            self.answer.set_result(record)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(ResolutionError(f"DNS query for {self.qname} failed: {exc}"))


def _question(name: str) -> tuple[DNSRecord, str]:
    query = DNSRecord.question(name, "TXT")
    query.header.id = secrets.randbelow(65536)
    return query, str(query.q.qname).lower()


async def _udp(query: DNSRecord, qname: str, nameserver: Nameserver) -> DNSRecord:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[DNSRecord] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Reply(query.header.id, qname, answer), remote_addr=nameserver
    )
    try:
        transport.sendto(query.pack())
        return await answer
    finally:
        transport.close()


async def _tcp(query: DNSRecord, qname: str, nameserver: Nameserver) -> DNSRecord:
    reader, writer = await asyncio.open_connection(*nameserver)
    try:
        packet = query.pack()
        writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        record = DNSRecord.parse(await reader.readexactly(length))
    finally:
        writer.close()
    if record.header.id != query.header.id or str(record.q.qname).lower() != qname:
        raise ResolutionError(f"DNS answer over TCP does not match the query for {qname}")
    return record


async def query_txt(
    name: str, *, nameserver: Nameserver | None = None, timeout: float = limits.LOOKUP_TIMEOUT_S
) -> list[str]:
    """TXT strings at ``name`` (multi-chunk records joined); [] when none exist.

    Raises :class:`ResolutionError` on timeout, refusal or server failure, so
    "no record" and "could not ask" stay distinguishable.
    """
    server = nameserver or system_nameserver()
    query, qname = _question(name)
    try:
        async with asyncio.timeout(timeout):
            record = await _udp(query, qname, server)
            if record.header.tc:
                record = await _tcp(query, qname, server)
    except TimeoutError:
        raise ResolutionError(
            f"DNS query for {name} got no answer from {server[0]}:{server[1]} in {timeout:g} s"
        ) from None
    except (OSError, asyncio.IncompleteReadError, DNSError, struct.error) as exc:
        raise ResolutionError(f"DNS query for {name} failed: {type(exc).__name__}: {exc}") from None
    rcode = record.header.rcode
    if rcode == _NXDOMAIN:
        return []
    if rcode != 0:
        raise ResolutionError(f"DNS query for {name} failed: {RCODE.get(rcode, rcode)}")
    out: list[str] = []
    for rr in record.rr:
        if rr.rtype == QTYPE.TXT and str(rr.rname).lower() == qname:
            out.append(b"".join(rr.rdata.data).decode("utf-8", errors="replace"))
    return out
