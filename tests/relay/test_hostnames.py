"""What ``requestCrawl`` and ``--upstream`` accept as a host, and the SSRF guard."""

from __future__ import annotations

import pytest

from atrepo.core.errors import Forbidden, InvalidRequest
from atrepo.relay.hostnames import check_public_address, hostname_of_endpoint, parse_host


@pytest.mark.parametrize(
    ("text", "key", "url"),
    [
        ("pds.example.com", "pds.example.com", "https://pds.example.com"),
        ("PDS.Example.COM.", "pds.example.com", "https://pds.example.com"),
        ("https://pds.example.com", "pds.example.com", "https://pds.example.com"),
        ("https://pds.example.com/", "pds.example.com", "https://pds.example.com"),
        ("https://pds.example.com:443", "pds.example.com", "https://pds.example.com"),
    ],
)
def test_crawl_hostnames_accepted(text: str, key: str, url: str) -> None:
    name = parse_host(text)
    assert (name.key, name.url) == (key, url)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://pds.example.com",  # crawled hosts serve https
        "https://pds.example.com:8443",  # and use the default port
        "https://pds.example.com/xrpc",  # a path
        "https://pds.example.com?x=1",
        "https://user:pw@pds.example.com",
        "localhost",
        "127.0.0.1",
        "10.0.0.1",
        "[::1]",
        "pds",  # one label
        "pds.local",
        "pds.internal",
        "-bad-.example.com",
        "a" * 64 + ".example.com",
        "ftp://pds.example.com",
    ],
)
def test_crawl_hostnames_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_host(text)


@pytest.mark.parametrize(
    ("text", "key", "url"),
    [
        ("http://127.0.0.1:2583", "127.0.0.1:2583", "http://127.0.0.1:2583"),
        ("127.0.0.1:2583", "127.0.0.1:2583", "http://127.0.0.1:2583"),
        ("localhost:2583", "localhost:2583", "http://localhost:2583"),
        ("https://pds.example.com", "pds.example.com", "https://pds.example.com"),
        ("http://[::1]:2583", "[::1]:2583", "http://[::1]:2583"),
    ],
)
def test_configured_hosts_may_be_local(text: str, key: str, url: str) -> None:
    name = parse_host(text, configured=True)
    assert (name.key, name.url) == (key, url)


def test_endpoint_names_match_host_keys() -> None:
    assert hostname_of_endpoint("https://pds.example.com") == "pds.example.com"
    assert hostname_of_endpoint("https://PDS.example.com:443/") == "pds.example.com"
    assert hostname_of_endpoint("http://127.0.0.1:2583") == "127.0.0.1:2583"
    assert hostname_of_endpoint("http://[::1]:2583") == "[::1]:2583"
    assert hostname_of_endpoint("ftp://pds.example.com") is None
    assert hostname_of_endpoint("not a url") is None
    for text in ("http://127.0.0.1:2583", "https://pds.example.com"):
        endpoint = parse_host(text, configured=True)
        assert hostname_of_endpoint(endpoint.url) == endpoint.key


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fc00::1"]
)
async def test_ssrf_guard_refuses_private_addresses(address: str) -> None:
    with pytest.raises(Forbidden):
        await check_public_address(address, 443)


async def test_ssrf_guard_accepts_public_literal() -> None:
    await check_public_address("8.8.8.8", 443)  # a literal: no lookup, no traffic


async def test_ssrf_guard_checks_every_resolved_address() -> None:
    with pytest.raises(Forbidden):
        await check_public_address("localhost", 443)  # resolves to loopback
