"""Handle resolution through a real DNS server and a real well-known HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from plc_chain import KEYS, genesis

from atrepo.core.errors import InvalidSyntax, ResolutionError
from atrepo.identity.dns import query_txt, system_nameserver
from atrepo.identity.handle import (
    INVALID_HANDLE,
    HandleMismatch,
    HandleNotFound,
    HandleResolver,
    parse_dns_txt,
)
from atrepo.identity.plc.server import create_app
from atrepo.identity.resolver import DIDResolver
from conftest import DNSServer, serve

Env = tuple[HandleResolver, DNSServer, dict[str, str], dict[str, str]]


@pytest.fixture
async def env(dns_server: tuple[DNSServer, tuple[str, int]]) -> AsyncIterator[Env]:
    """A PLC directory with three DIDs, a DNS server, a well-known server, a resolver."""
    dns, nameserver = dns_server
    well_known: dict[str, str] = {}

    async def atproto_did(request: web.Request) -> web.Response:
        host = request.host.split(":")[0].lower()
        if host not in well_known:
            return web.Response(status=404)
        return web.Response(text=well_known[host])

    site = web.Application()
    site.router.add_get("/.well-known/atproto-did", atproto_did)
    async with serve(create_app()) as plc, serve(site) as origin, aiohttp.ClientSession() as http:
        dids: dict[str, str] = {}
        for name, key in (("alice.test", KEYS[0]), ("bob.test", KEYS[1]), ("nobody.test", KEYS[2])):
            claimed = name if name != "nobody.test" else "alice.test"
            did, op = genesis([key], key, handle=claimed)
            async with http.post(f"{plc}/{did}", json=op) as resp:
                assert resp.status == 200
            dids[name] = did
        resolver = HandleResolver(
            DIDResolver(plc_url=plc, session=http, timeout=5),
            session=http,
            nameserver=nameserver,
            timeout=2,
            dev=True,
            http_origin=origin,
        )
        try:
            yield resolver, dns, well_known, dids
        finally:
            await resolver.close()
            await resolver.did_resolver.close()


async def test_dns_method_and_bidirectional_check(env: Env) -> None:
    resolver, dns, _, dids = env
    dns.records["_atproto.alice.test"] = [[b"v=spf1 -all"], [b"did=", dids["alice.test"].encode()]]
    assert await resolver.resolve("Alice.TEST") == dids["alice.test"]
    doc = await resolver.resolve_verified("alice.test")
    assert doc.did == dids["alice.test"] and doc.handle == "alice.test"
    assert await resolver.verified_handle(dids["alice.test"]) == "alice.test"
    assert dns.queries == ["_atproto.alice.test"]  # cached after the first lookup
    resolver.purge("ALICE.test")
    await resolver.resolve("alice.test")
    assert len(dns.queries) == 2


async def test_well_known_method(env: Env) -> None:
    resolver, _dns, well_known, dids = env
    well_known["bob.test"] = f"  {dids['bob.test']}\nignored second line\n"
    assert await resolver.resolve("bob.test") == dids["bob.test"]
    assert await resolver.resolve_http("bob.test") == dids["bob.test"]
    assert (await resolver.resolve_verified("bob.test")).did == dids["bob.test"]
    with pytest.raises(HandleNotFound, match="DNS"):
        await resolver.resolve_dns("bob.test")


async def test_dns_wins_and_duplicates_fall_back(env: Env) -> None:
    resolver, dns, well_known, dids = env
    dns.records["_atproto.alice.test"] = [[f"did={dids['alice.test']}".encode()]]
    well_known["alice.test"] = dids["bob.test"]
    assert await resolver.resolve("alice.test") == dids["alice.test"]
    dns.records["_atproto.bob.test"] = [
        [b"did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"],
        [b"did=did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"],
    ]
    well_known["bob.test"] = dids["bob.test"]
    assert await resolver.resolve("bob.test") == dids["bob.test"]


async def test_failed_checks_give_handle_invalid(env: Env) -> None:
    resolver, dns, well_known, dids = env
    # carol.test points at a DID whose document claims alice.test.
    dns.records["_atproto.carol.test"] = [[f"did={dids['nobody.test']}".encode()]]
    with pytest.raises(HandleMismatch, match=r"claims alice\.test"):
        await resolver.resolve_verified("carol.test")
    # That DID claims alice.test, but alice.test points elsewhere.
    dns.records["_atproto.alice.test"] = [[f"did={dids['alice.test']}".encode()]]
    assert await resolver.verified_handle(dids["nobody.test"]) == INVALID_HANDLE
    # bob.test resolves nowhere at all.
    assert await resolver.verified_handle(dids["bob.test"]) == INVALID_HANDLE
    with pytest.raises(HandleNotFound, match="no DID found"):
        await resolver.resolve("bob.test")
    assert well_known == {}


async def test_refused_before_any_traffic(env: Env) -> None:
    resolver, dns, _, _ = env
    for handle in ("foo.onion", "x.example", "a.local", "handle.invalid"):
        with pytest.raises(HandleNotFound):
            await resolver.resolve(handle)
    with pytest.raises(InvalidSyntax):
        await resolver.resolve("not a handle")
    assert dns.queries == []
    async with HandleResolver() as production:
        with pytest.raises(HandleNotFound, match="development"):
            await production.resolve("alice.test")
    with pytest.raises(ValueError, match="dev=True"):
        HandleResolver(http_origin="http://127.0.0.1:1")


async def test_dns_client(dns_server: tuple[DNSServer, tuple[str, int]]) -> None:
    dns, nameserver = dns_server
    dns.records["_atproto.big.test"] = [[b"did=did:plc:", b"aaaaaaaaaaaaaaaaaaaaaaaa"]]
    assert await query_txt("_atproto.big.test", nameserver=nameserver, timeout=2) == [
        "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    ]
    assert await query_txt("_atproto.missing.test", nameserver=nameserver, timeout=2) == []
    dns.truncate_udp = True  # the answer must then come over TCP
    assert len(await query_txt("_atproto.big.test", nameserver=nameserver, timeout=2)) == 1
    dns.fail = True
    with pytest.raises(ResolutionError, match="SERVFAIL"):
        await query_txt("_atproto.big.test", nameserver=nameserver, timeout=2)
    dns.silent = True
    with pytest.raises(ResolutionError, match="no answer"):
        await query_txt("_atproto.big.test", nameserver=nameserver, timeout=0.2)


def test_txt_parsing_and_resolv_conf(tmp_path: Path) -> None:
    did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    assert parse_dns_txt(["hello", f"did={did}"]) == did
    with pytest.raises(HandleNotFound, match="exactly one"):
        parse_dns_txt([f"did={did}", f"did={did}"])
    with pytest.raises(HandleNotFound, match="no did="):
        parse_dns_txt(["DID=" + did])
    with pytest.raises(HandleNotFound, match="invalid DID"):
        parse_dns_txt(["did=nope"])
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    assert system_nameserver(conf) == ("10.0.0.2", 53)
    assert system_nameserver(tmp_path / "missing") == ("127.0.0.1", 53)
