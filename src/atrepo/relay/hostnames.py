"""Upstream host names: what ``requestCrawl`` and ``--upstream`` accept, and the SSRF guard.

A relay dials whatever hostname anyone posts to ``requestCrawl``, so that
input is the relay's widest door. The rules, after the reference relay's
(sync.md §8) but checked before any I/O:

* a bare hostname (``pds.example.com``) or an ``https://`` URL with no path,
  query, fragment or credentials; lower-cased;
* a crawled host must be a DNS name of at least two labels on the default
  port, whose every address is public (``is_global``): a relay must not be
  talked into connecting to its own loopback, a private network or a cloud
  metadata address;
* hosts the operator configured (``--upstream``) may be anything: loopback,
  a port, plain ``http://``. They are trusted by the operator, not by input.

The key a host is stored under is its hostname, with ``:port`` only when the
port is not the scheme's default (``127.0.0.1:2583``), which is also how
``listHosts`` names it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from atrepo.core.errors import Forbidden, InvalidRequest

__all__ = ["HostName", "check_public_address", "hostname_of_endpoint", "parse_host"]

_LABEL: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DEFAULT_PORT: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HostName:
    """A parsed upstream: ``key`` is how the relay names it, ``url`` where it connects."""

    key: str
    url: str
    host: str
    port: int
    scheme: str


def parse_host(text: str, *, configured: bool = False) -> HostName:
    """Parse a ``requestCrawl`` hostname or an ``--upstream`` URL; raise ``InvalidRequest`` if unusable.

    ``configured`` lifts the crawl-only rules (public DNS name, https, default port).
    """
    raw = text.strip()
    if not raw or len(raw) > 512:
        raise InvalidRequest("hostname is empty or too long")
    if "://" not in raw:
        raw = ("http://" if configured and _looks_local(raw) else "https://") + raw
    try:
        parts = urlsplit(raw)
        port_given = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"hostname {text!r} is not a host: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise InvalidRequest(f"hostname {text!r}: scheme must be https (or http for a configured host)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidRequest(f"hostname {text!r} has a path, query or fragment; send the bare hostname")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"hostname {text!r} carries credentials")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise InvalidRequest(f"hostname {text!r} names no host")
    port = port_given if port_given is not None else _DEFAULT_PORT[scheme]
    if not configured:
        if scheme != "https":
            raise InvalidRequest(f"hostname {text!r}: a crawled host must serve https")
        if port != _DEFAULT_PORT[scheme]:
            raise InvalidRequest(f"hostname {text!r}: a crawled host must use the default port")
        _check_dns_name(host, text)
    elif not _is_ip(host):
        _check_dns_name(host, text, labels=1)
    key = host if port == _DEFAULT_PORT[scheme] else f"{host}:{port}"
    if ":" in host:  # an IPv6 literal
        netloc = f"[{host}]" if port == _DEFAULT_PORT[scheme] else f"[{host}]:{port}"
        key = netloc
    else:
        netloc = key
    return HostName(key, f"{scheme}://{netloc}", host, port, scheme)


def hostname_of_endpoint(url: str) -> str | None:
    """The host key of a DID document's PDS endpoint (None when it is not an http(s) URL)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in _DEFAULT_PORT or not host:
        return None
    if port is None or port == _DEFAULT_PORT[scheme]:
        return f"[{host}]" if ":" in host else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def check_public_address(host: str, port: int) -> None:
    """Refuse (``Forbidden``) a host that resolves to any non-public address, or to none."""
    if _is_ip(host):
        addresses = [host]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=5.0)
        except (OSError, TimeoutError) as exc:
            raise InvalidRequest(f"hostname {host} does not resolve: {exc}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise InvalidRequest(f"hostname {host} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise Forbidden(f"hostname {host} resolves to {address}, which is not a public address")


def _looks_local(raw: str) -> bool:
    host = raw.split("/", 1)[0].rsplit(":", 1)[0].strip("[]").lower()
    return host == "localhost" or _is_ip(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_dns_name(host: str, text: str, *, labels: int = 2) -> None:
    if _is_ip(host):
        raise InvalidRequest(f"hostname {text!r}: a crawled host must be a DNS name, not an address")
    parts = host.split(".")
    if len(parts) < labels or len(host) > 253 or not all(_LABEL.match(p) for p in parts):
        raise InvalidRequest(f"hostname {text!r} is not a valid DNS name")
    if labels > 1 and (parts[-1] in ("localhost", "local", "internal", "test") or parts[-1].isdigit()):
        raise InvalidRequest(f"hostname {text!r} is not a public DNS name")
