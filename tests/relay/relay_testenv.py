"""Helpers of the relay tests: real hosts, a real relay in front of them, and raw calls to both.

:class:`RelayEnv` is what the ``relay_env`` fixture (``conftest.py``) gives a
test: ``hosts`` (each an :class:`UpstreamHost`: a real atrepo host, the first
one running the embedded PLC directory the others and the relay use),
``relay`` (a :class:`~atrepo.relay.app.RunningRelay` subscribed to every
host as an ``--upstream``), ``http`` (one client session) and helpers to
create accounts and records, call XRPC on either side, call the relay's admin
API and wait for a condition. Imported by name (``from relay_testenv import
...``) like ``host_support``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from atrepo.host import HostConfig, RunningHost, start_host
from atrepo.relay import RelayConfig, start_relay
from atrepo.relay.app import RunningRelay

#: The relay's admin password in these tests (a relay without one generates it: test_relay_admin.py).
ADMIN_PASSWORD = "relay-admin-secret"
#: ``relay_env_factory``'s type: ``await make(hosts=1, before=None, **relay_config) -> RelayEnv``.
RelayEnvFactory = Callable[..., Awaitable["RelayEnv"]]
#: How long :meth:`RelayEnv.wait_for` waits by default.
WAIT_S = 20.0


@dataclass
class Reply:
    """A raw HTTP answer: status, JSON body (None when empty or not JSON) and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    async with http.request(method, url, json=body, params=params, headers=headers or {}) as resp:
        raw = await resp.read()
        try:
            data = await resp.json(content_type=None) if raw else None
        except ValueError:
            data = None
        return Reply(resp.status, data, dict(resp.headers))


def basic_auth(password: str, user: str = "admin") -> dict[str, str]:
    """``Authorization: Basic base64(user:password)``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Account:
    """An account created on one of the test hosts."""

    host: UpstreamHost
    did: str
    handle: str
    token: str


@dataclass
class UpstreamHost:
    """A real atrepo host the relay subscribes to."""

    running: RunningHost
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def plc_url(self) -> str:
        return self.running.plc_url

    async def call(
        self, nsid: str, *, body: Any = None, params: dict[str, str] | None = None, token: str | None = None
    ) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        method = "POST" if body is not None else "GET"
        return await request(
            self.http, method, f"{self.url}/xrpc/{nsid}", body=body, params=params, headers=headers
        )

    async def create_account(self, handle: str, password: str = "correct horse") -> Account:
        reply = await self.call(
            "com.atproto.server.createAccount", body={"handle": handle, "password": password}
        )
        assert reply.status == 200, reply.body
        return Account(self, reply.body["did"], handle, reply.body["accessJwt"])

    async def create_record(
        self, account: Account, text: str = "hello", collection: str = "app.bsky.feed.post"
    ) -> dict[str, Any]:
        record = {"$type": collection, "text": text, "createdAt": "2026-12-02T00:00:00Z"}
        reply = await self.call(
            "com.atproto.repo.createRecord",
            body={"repo": account.did, "collection": collection, "record": record},
            token=account.token,
        )
        assert reply.status == 200, reply.body
        body: dict[str, Any] = reply.body
        return body


@dataclass
class RelayEnv:
    """Hosts, a relay subscribed to them, and helpers (see the module docstring)."""

    tmp: Path
    http: aiohttp.ClientSession
    hosts: list[UpstreamHost]
    relay: RunningRelay
    config: RelayConfig
    admin_password: str | None = ADMIN_PASSWORD

    @property
    def url(self) -> str:
        return self.relay.url

    # --- hosts and accounts ------------------------------------------------------------

    async def create_account(self, handle: str, *, host: int = 0) -> Account:
        """A new account on ``hosts[host]`` (the relay learns of it from the host's firehose)."""
        return await self.hosts[host].create_account(handle)

    async def create_records(
        self, account: Account, count: int = 1, *, collection: str = "app.bsky.feed.post"
    ) -> list[dict[str, Any]]:
        """``count`` new records in ``account``'s repository, one commit each."""
        return [await account.host.create_record(account, f"record {i}", collection) for i in range(count)]

    async def add_host(self, *, upstream: bool = True) -> UpstreamHost:
        """Another host on the same PLC directory; ``upstream``: restart the relay with it configured."""
        index = len(self.hosts)
        running = await start_host(
            HostConfig(
                host="127.0.0.1",
                port=0,
                plc_url=self.hosts[0].plc_url,
                data_dir=self.tmp / f"host-{index}",
                rate_limits=False,
            )
        )
        host = UpstreamHost(running, self.http)
        self.hosts.append(host)
        if upstream:
            await self.restart_relay(upstreams=tuple(h.url for h in self.hosts))
        return host

    # --- the relay -----------------------------------------------------------------------

    async def restart_relay(self, **changes: Any) -> RunningRelay:
        """Stop the relay and start it again on the same data, with ``changes`` to its config."""
        await self.relay.stop()
        self.config = replace(self.config, **changes)
        self.relay = await start_relay(self.config)
        return self.relay

    async def call(self, nsid: str, *, body: Any = None, params: dict[str, str] | None = None) -> Reply:
        """An XRPC call to the relay."""
        method = "POST" if body is not None else "GET"
        return await request(self.http, method, f"{self.url}/xrpc/{nsid}", body=body, params=params)

    async def admin(self, method: str, path: str, body: Any = None, *, password: str | None = None) -> Reply:
        """A call to the relay's admin API (``/admin/...``) with its password (or ``password``)."""
        secret = password if password is not None else self.admin_password
        headers = basic_auth(secret) if secret is not None else {}
        return await request(self.http, method, f"{self.url}{path}", body=body, headers=headers)

    async def status(self) -> dict[str, Any]:
        """The relay's ``/status.json``."""
        reply = await request(self.http, "GET", f"{self.url}/status.json")
        assert reply.status == 200, reply.body
        doc: dict[str, Any] = reply.body
        return doc

    async def wait_for(
        self, check: Callable[[], Awaitable[Any]], *, timeout: float = WAIT_S, what: str = "condition"
    ) -> Any:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {result!r})")
            await asyncio.sleep(0.1)

    async def wait_relayed(self, account: Account, *, timeout: float = WAIT_S) -> None:
        """Until the relay's ``getLatestCommit`` of ``account`` equals its host's."""

        async def same() -> bool:
            want = await account.host.call("com.atproto.sync.getLatestCommit", params={"did": account.did})
            got = await self.call("com.atproto.sync.getLatestCommit", params={"did": account.did})
            return got.status == 200 and got.body == want.body

        await self.wait_for(same, timeout=timeout, what=f"the relay to follow {account.did}")
