"""Helpers of the sync consumer's tests: real hosts, accounts, writes, and digests to compare with.

:class:`SyncEnv` starts hosts on 127.0.0.1 (the first runs the embedded PLC
directory; all share it and an admin password), writes through their XRPC
API, and computes :func:`host_digest`: the digest of what a host's
``getRepo`` holds, verified by ``core.verify`` and computed as
``MirrorStore.records_digest`` does (``digest_records``), so a test can say
"the mirror equals the host" in one comparison, deletes included.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from relay_testenv import Account, Reply, UpstreamHost, basic_auth, request

from atrepo.core.verify import verify_repo_car
from atrepo.host import HostConfig, start_host
from atrepo.store.mirror import digest_records
from atrepo.sync import RouteHook, RunningSync, SyncConfig, start_sync

HOST_ADMIN_PASSWORD = "host-admin-secret"
WAIT_S = 25.0


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = WAIT_S, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    result: Any = None
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {result!r})")
        await asyncio.sleep(0.1)


async def host_digest(account: Account, collections: Sequence[str] = ()) -> str:
    """The digest of ``account``'s repository as its host's ``getRepo`` serves it (verified)."""
    reply_bytes = await _get_repo(account)
    entries = []
    for key, cid in verify_repo_car(io.BytesIO(reply_bytes), did=account.did):
        collection, rkey = key.split("/", 1)
        if _wanted(collection, collections):
            entries.append((collection, rkey, cid))
    return digest_records(entries)


def _wanted(collection: str, collections: Sequence[str]) -> bool:
    if not collections:
        return True
    return any(collection == c or (c.endswith("*") and collection.startswith(c[:-1])) for c in collections)


async def _get_repo(account: Account) -> bytes:
    url = f"{account.host.url}/xrpc/com.atproto.sync.getRepo"
    async with account.host.http.get(url, params={"did": account.did}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


EMPTY_DIGEST = digest_records([])


@dataclass
class SyncEnv:
    """Hosts on one PLC directory and running sync consumers, all stopped by ``close``."""

    tmp: Path
    http: aiohttp.ClientSession
    hosts: list[UpstreamHost] = field(default_factory=list)
    syncs: list[RunningSync] = field(default_factory=list)

    async def add_host(self, public_url: str | None = None) -> UpstreamHost:
        """A host on the shared PLC directory; ``public_url`` is what its DID documents name (a proxy)."""
        index = len(self.hosts)
        config = HostConfig(
            host="127.0.0.1",
            port=0,
            plc_port=0,
            plc_url=self.hosts[0].plc_url if self.hosts else None,
            data_dir=self.tmp / f"host-{index}",
            rate_limits=False,
            admin_password=HOST_ADMIN_PASSWORD,
            public_url=public_url,
        )
        host = UpstreamHost(await start_host(config), self.http)
        self.hosts.append(host)
        return host

    @property
    def plc_url(self) -> str:
        return self.hosts[0].plc_url

    async def start_sync(
        self, upstream: str, name: str = "sync", *, routes: Sequence[RouteHook] = (), **settings: Any
    ) -> RunningSync:
        config = SyncConfig(
            upstream=upstream, plc_url=self.plc_url, data_dir=self.tmp / name, port=0, **settings
        )
        running = await start_sync(config, routes=routes)
        self.syncs.append(running)
        return running

    async def stop_sync(self, running: RunningSync) -> None:
        await running.stop()
        if running in self.syncs:
            self.syncs.remove(running)

    async def close(self) -> None:
        for running in self.syncs:
            await running.stop()
        for host in reversed(self.hosts):
            await host.running.stop()

    # --- writes ----------------------------------------------------------------------------

    async def post(self, account: Account, text: str, collection: str = "app.bsky.feed.post") -> str:
        """A new record; its rkey."""
        body = await account.host.create_record(account, text, collection)
        uri: str = body["uri"]
        return uri.rsplit("/", 1)[1]

    async def put(
        self, account: Account, rkey: str, text: str, collection: str = "app.bsky.feed.post"
    ) -> None:
        record = {"$type": collection, "text": text, "createdAt": "2026-12-02T00:00:00Z"}
        reply = await account.host.call(
            "com.atproto.repo.putRecord",
            body={"repo": account.did, "collection": collection, "rkey": rkey, "record": record},
            token=account.token,
        )
        assert reply.status == 200, reply.body

    async def delete(self, account: Account, rkey: str, collection: str = "app.bsky.feed.post") -> None:
        reply = await account.host.call(
            "com.atproto.repo.deleteRecord",
            body={"repo": account.did, "collection": collection, "rkey": rkey},
            token=account.token,
        )
        assert reply.status == 200, reply.body

    async def deactivate(self, account: Account) -> None:
        reply = await account.host.call("com.atproto.server.deactivateAccount", body={}, token=account.token)
        assert reply.status == 200, reply.body

    async def activate(self, account: Account) -> None:
        reply = await request(
            self.http,
            "POST",
            f"{account.host.url}/xrpc/com.atproto.server.activateAccount",
            headers={"Authorization": f"Bearer {account.token}"},
        )
        assert reply.status == 200, reply.body

    async def admin_delete(self, account: Account) -> None:
        reply: Reply = await request(
            self.http,
            "POST",
            f"{account.host.url}/xrpc/com.atproto.admin.deleteAccount",
            body={"did": account.did},
            headers=basic_auth(HOST_ADMIN_PASSWORD),
        )
        assert reply.status == 200, reply.body

    async def login(self, host: UpstreamHost, account: Account, password: str = "correct horse") -> Account:
        """``account`` as a session on ``host`` (after a migration)."""
        reply = await host.call(
            "com.atproto.server.createSession", body={"identifier": account.handle, "password": password}
        )
        assert reply.status == 200, reply.body
        return Account(host, account.did, account.handle, reply.body["accessJwt"])

    # --- the mirror ------------------------------------------------------------------------

    async def wait_mirrored(
        self,
        running: RunningSync,
        account: Account,
        collections: Sequence[str] = (),
        *,
        timeout: float = WAIT_S,
    ) -> None:
        """Until the mirror's digest of ``account`` equals its host's and the repo is active and idle."""

        async def same() -> bool:
            want = await host_digest(account, collections)
            repo = await running.engine.worker.read(lambda s: s.get_repo(account.did))
            got = await running.engine.worker.read(lambda s: s.records_digest(account.did))
            return repo is not None and repo.state == "active" and got == want

        await wait_for(same, timeout=timeout, what=f"the mirror of {account.did} to equal its host")
