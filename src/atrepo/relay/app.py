"""The relay's process: store, worker, ingest, hosts, resyncs, its firehose and its endpoints.

:func:`start_relay` brings everything up and returns a :class:`RunningRelay`;
``await running.stop()`` takes it down in the order that loses nothing:
upstream subscriptions stop first (no new events), what is staged is
committed (``Ingest.close``), downstream subscribers get 1012, then the
HTTP server, the worker and the store close. ``atrepo relay``
(:mod:`atrepo.cli.relay`) wires that to SIGTERM/SIGINT; tests call the same
two functions on port 0.

Endpoints (``com.atproto.sync.*``): ``subscribeRepos`` (the relay's own seq,
a retention window, the host's cursor rules and fan-out: :mod:`atrepo.firehose`),
``listRepos``, ``getRepoStatus``, ``getLatestCommit``, ``getRepo`` (a
redirect to the account's host), ``listHosts``, ``getHostStatus``,
``requestCrawl``, ``listReposByCollection``; ``/metrics``; ``/`` (status
page); ``/admin/*`` under HTTP Basic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from aiohttp import web

from atrepo.core.errors import (
    HostNotFound,
    InvalidRequest,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
)
from atrepo.firehose import Fanout, mount_subscribe_repos
from atrepo.identity.resolver import DIDResolver
from atrepo.store.relay import RelayAccount, RelayStore, open_relay_store
from atrepo.store.worker import StoreWorker
from atrepo.xrpc import Metrics, XrpcRouter
from atrepo.xrpc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from atrepo.xrpc.server import XrpcContext, bind_listener

from . import admin
from . import status as status_page
from .config import RelayConfig
from .hosts import HostLink, HostManager
from .ingest import Ingest
from .resync import Resyncer
from .verifier import Verifier

__all__ = ["RelayContext", "RunningRelay", "start_relay"]

log = logging.getLogger("atrepo.relay")

#: How often events past the retention window are pruned.
MAINTENANCE_INTERVAL_S: Final = 600.0
SHUTDOWN_GRACE_S: Final = 10.0


@dataclass(eq=False)
class RelayContext:
    """What every part of the running relay shares (one per process)."""

    config: RelayConfig
    store: RelayStore
    worker: StoreWorker[RelayStore]
    http: aiohttp.ClientSession
    resolver: DIDResolver
    metrics: Metrics
    fanout: Fanout[RelayStore]
    ingest: Ingest
    verifier: Verifier
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    hosts: HostManager = field(init=False)
    resyncer: Resyncer = field(init=False)

    def __post_init__(self) -> None:
        self.hosts = HostManager(self)
        self.resyncer = Resyncer(
            self.ingest,
            self.http,
            self.metrics,
            workdir=self.config.data_dir / "tmp",
            concurrency=self.config.resync_concurrency,
        )
        metrics = self.metrics
        self._host_status = metrics.gauge(
            "atrepo_relay_host_status", "1 for the status each upstream host is in", ("host", "status")
        )
        self._host_cursor = metrics.gauge(
            "atrepo_relay_host_cursor", "Upstream cursor of each host", ("host",)
        )
        self._host_accounts = metrics.gauge("atrepo_relay_host_accounts", "Accounts of each host", ("host",))
        self._host_epm = metrics.gauge(
            "atrepo_relay_host_events_per_minute", "Events from each host in the last minute", ("host",)
        )
        self._head = metrics.gauge("atrepo_relay_head_seq", "Seq of the newest event in the relay's firehose")
        self._accounts = metrics.gauge("atrepo_relay_accounts", "Accounts by the relay's status", ("status",))
        self._subscribers = metrics.gauge("atrepo_relay_subscribers", "Connected downstream subscribers")

    def host_status_changed(self, link: HostLink) -> None:
        for status in ("active", "idle", "offline", "throttled", "banned"):
            self._host_status.set(1 if link.status == status else 0, (link.key, status))

    async def sample_metrics(self) -> None:
        """Refresh the gauges read from live state (``/metrics`` calls it before rendering)."""
        for link in self.hosts.links.values():
            self.host_status_changed(link)
            cursor = link.cursor
            self._host_cursor.set(cursor if cursor is not None else -1, (link.key,))
            self._host_accounts.set(link.account_count, (link.key,))
            self._host_epm.set(link.events_per_minute(), (link.key,))
        self._head.set(self.fanout.tail)
        counts = await self.worker.read(RelayStore.count_accounts)
        for status, count in counts.items():
            self._accounts.set(count, (status,))
        self._subscribers.set(len(self.fanout.subscribers))


# --- sync endpoints ----------------------------------------------------------------------------


def _repo_view(account: RelayAccount) -> dict[str, Any] | None:
    if account.commit is None or account.rev is None:
        return None
    view: dict[str, Any] = {"did": account.did, "head": str(account.commit), "rev": account.rev}
    view["active"] = account.active
    status = account.public_status
    if status is not None and status != "inactive":
        view["status"] = status
    return view


def _unavailable(account: RelayAccount | None, did: str) -> None:
    if account is None:
        raise RepoNotFound(f"Could not find repo for DID: {did}")
    if account.active:
        return
    status = account.public_status
    if status == "takendown":
        raise RepoTakendown(f"Repo has been takendown: {did}")
    if status == "suspended":
        raise RepoSuspended(f"Repo has been suspended: {did}")
    if status == "deactivated":
        raise RepoDeactivated(f"Repo has been deactivated: {did}")
    raise RepoNotFound(f"Repo is not active: {did} ({status or 'inactive'})")


def _host_view(link: HostLink) -> dict[str, Any]:
    view: dict[str, Any] = {"hostname": link.key, "accountCount": link.account_count, "status": link.status}
    cursor = link.cursor
    if cursor is not None:
        view["seq"] = cursor
    return view


def register_sync(router: XrpcRouter, ctx: RelayContext) -> None:
    """The relay's ``com.atproto.sync.*`` queries and ``requestCrawl``."""
    worker = ctx.worker

    @router.query("com.atproto.sync.listRepos")
    async def list_repos(xc: XrpcContext) -> dict[str, Any]:
        limit = int(xc.params.get("limit", 500))
        after = xc.params.get("cursor") or None
        rows = await worker.read(RelayStore.list_accounts, after=after, limit=limit)
        repos = [v for v in (_repo_view(r) for r in rows) if v is not None]
        out: dict[str, Any] = {"repos": repos}
        if len(rows) == limit:
            out["cursor"] = rows[-1].did
        return out

    @router.query("com.atproto.sync.getRepoStatus")
    async def get_repo_status(xc: XrpcContext) -> dict[str, Any]:
        did = xc.params["did"]
        account = await worker.read(RelayStore.get_account, did)  # committed state, not staged
        if account is None:
            raise RepoNotFound(f"Could not find repo for DID: {did}")
        out: dict[str, Any] = {"did": did, "active": account.active}
        status = account.public_status
        if status is not None and status != "inactive":
            out["status"] = status
        if account.active and account.rev is not None:
            out["rev"] = account.rev
        return out

    @router.query("com.atproto.sync.getLatestCommit")
    async def get_latest_commit(xc: XrpcContext) -> dict[str, Any]:
        did = xc.params["did"]
        account = await worker.read(RelayStore.get_account, did)  # committed state, not staged
        _unavailable(account, did)
        assert account is not None
        if account.commit is None or account.rev is None:
            raise RepoNotFound(f"No commit known yet for DID: {did}")
        return {"cid": str(account.commit), "rev": account.rev}

    @router.query("com.atproto.sync.getRepo")
    async def get_repo(xc: XrpcContext) -> Any:
        did = xc.params["did"]
        account = await worker.read(RelayStore.get_account, did)  # committed state, not staged
        _unavailable(account, did)
        assert account is not None
        link = ctx.hosts.links.get(account.host_id)
        if link is None:
            raise RepoNotFound(f"Could not find the host of {did}")
        location = f"{link.url}/xrpc/com.atproto.sync.getRepo?did={quote(did)}"
        since = xc.params.get("since")
        if since:
            location += f"&since={quote(since)}"
        raise web.HTTPFound(location)

    @router.query("com.atproto.sync.listHosts")
    async def list_hosts(xc: XrpcContext) -> dict[str, Any]:
        limit = int(xc.params.get("limit", 200))
        cursor = xc.params.get("cursor")
        try:
            after = int(cursor) if cursor else 0
        except ValueError:
            raise InvalidRequest(f"bad cursor {cursor!r}") from None
        links = sorted((lk for lk in ctx.hosts.links.values() if lk.id > after), key=lambda lk: lk.id)[:limit]
        out: dict[str, Any] = {"hosts": [_host_view(lk) for lk in links]}
        if len(links) == limit:
            out["cursor"] = str(links[-1].id)
        return out

    @router.query("com.atproto.sync.getHostStatus")
    async def get_host_status(xc: XrpcContext) -> dict[str, Any]:
        name = str(xc.params["hostname"]).strip().lower()
        link = ctx.hosts.by_name(name)
        if link is None:
            raise HostNotFound(f"no host {name} at this relay")
        return _host_view(link)

    @router.procedure("com.atproto.sync.requestCrawl")
    async def request_crawl(xc: XrpcContext) -> None:
        await ctx.hosts.request_crawl(str(xc.input["hostname"]))

    @router.query("com.atproto.sync.listReposByCollection")
    async def list_repos_by_collection(xc: XrpcContext) -> dict[str, Any]:
        limit = int(xc.params.get("limit", 500))
        dids = await worker.read(
            RelayStore.list_repos_by_collection,
            xc.params["collection"],
            after=xc.params.get("cursor") or None,
            limit=limit,
        )
        out: dict[str, Any] = {"repos": [{"did": d} for d in dids]}
        if len(dids) == limit:
            out["cursor"] = dids[-1]
        return out


# --- the process -------------------------------------------------------------------------------


@dataclass(eq=False)
class RunningRelay:
    """A started relay: its URL, its context, and :meth:`stop`."""

    context: RelayContext
    url: str
    _runner: web.AppRunner
    _maintenance: asyncio.Task[None] | None = None
    _stopped: bool = False

    async def stop(self) -> None:
        """Stop upstreams, commit what is staged, close subscribers, the server and the store."""
        if self._stopped:
            return
        self._stopped = True
        ctx = self.context
        log.info("relay shutting down")
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        try:
            await ctx.hosts.stop()
            await ctx.resyncer.close()
            await ctx.ingest.close()
            await ctx.fanout.close()
            await self._runner.cleanup()
        finally:
            try:
                await ctx.worker.close()
            finally:
                ctx.store.close()
                ctx.verifier.close()
                await ctx.resolver.close()
                await ctx.http.close()
        log.info("relay stopped")


async def prune_forever(worker: StoreWorker[RelayStore], retention_hours: float) -> None:
    """Prune events past the retention window now and every ``MAINTENANCE_INTERVAL_S``, until cancelled.

    Run by the process that writes the log: the whole relay, or the sequencer of the split roles.
    """
    while True:
        try:
            cutoff = time.time_ns() // 1_000_000 - int(retention_hours * 3600 * 1000)
            pruned = await worker.run(RelayStore.prune_events, cutoff)
            if pruned:
                log.info("pruned %d events past the %g h retention window", pruned, retention_hours)
        except Exception:
            log.exception("relay maintenance failed")
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)


def _add_metrics_and_status(app: web.Application, ctx: RelayContext) -> None:
    """``/metrics`` (sampled per scrape) and the status page: every relay process serves both."""

    async def metrics(request: web.Request) -> web.Response:
        await ctx.sample_metrics()
        return web.Response(
            body=ctx.metrics.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    app.router.add_get("/metrics", metrics, allow_head=True)
    status_page.add_routes(app, ctx)


def build_app(ctx: RelayContext, router: XrpcRouter) -> web.Application:
    """The aiohttp application: XRPC routes, ``/metrics``, the status page and the admin API."""
    register_sync(router, ctx)
    mount_subscribe_repos(router, ctx.store, ctx.worker, ctx.fanout)
    app = web.Application()
    router.setup(app)
    _add_metrics_and_status(app, ctx)
    admin.add_routes(app, ctx)
    return app


def build_ingest_app(ctx: RelayContext, router: XrpcRouter) -> web.Application:
    """An ingest process's application: ``/xrpc/_health``, ``/metrics`` and the status page.

    It serves no firehose (its events reach subscribers through the
    sequencer) and no admin API or ``requestCrawl`` (the sequencer takes
    crawl requests for every partition; see :mod:`atrepo.relay.follower`).
    """
    app = web.Application()
    router.setup(app)
    _add_metrics_and_status(app, ctx)
    return app


async def start_relay(config: RelayConfig) -> RunningRelay:
    """Open the store, start the ingest, bind, serve, then connect to the upstream hosts.

    ``config.role`` is ``all`` (the whole relay) or ``ingest`` (an ingest
    process: the hosts of ``config.partition`` only, its batches queued for
    the sequencer; needs PostgreSQL). The store is ``config.database``
    (PostgreSQL) when given, else
    ``relay.sqlite`` in the data directory; an unreachable server raises
    :class:`~atrepo.core.errors.StoreUnavailable`, a store another relay
    writes :class:`~atrepo.core.errors.StoreInUse`.
    """
    if config.role not in ("all", "ingest"):
        raise ValueError(f"start_relay runs the whole relay or an ingest process, not {config.role!r}")
    ingest_only = config.role == "ingest"
    if ingest_only and (config.database is None or config.partition is None):
        raise ValueError("an ingest process needs a PostgreSQL database and its partition")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    sock = bind_listener(config.host, config.port)
    try:
        store = open_relay_store(
            config.database or config.data_dir / "relay.sqlite",
            synchronous=config.synchronous,  # type: ignore[arg-type]
            partition=config.partition if ingest_only else None,
        )
    except BaseException:
        sock.close()
        raise
    worker: StoreWorker[RelayStore] = StoreWorker(store)
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
        headers={"User-Agent": "atrepo-relay"},
    )
    resolver = DIDResolver(plc_url=config.plc_url, session=http)
    metrics = Metrics()
    fanout: Fanout[RelayStore] = Fanout(worker)
    verifier = Verifier(config.workers)
    ingest = Ingest(
        store, worker, fanout, resolver, metrics, verifier=verifier, lenient=config.lenient, queue=ingest_only
    )
    ctx = RelayContext(config, store, worker, http, resolver, metrics, fanout, ingest, verifier)

    async def health() -> None:  # /xrpc/_health: 503 once the store stops answering (a database gone)
        await worker.read(RelayStore.head_seq)

    router = XrpcRouter(metrics=metrics, health_check=health)
    app = build_ingest_app(ctx, router) if ingest_only else build_app(ctx, router)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    port = sock.getsockname()[1]
    url = f"http://{config.host}:{port}" if ":" not in config.host else f"http://[{config.host}]:{port}"
    if not ingest_only:
        await fanout.start()
        # events an ingest process queued and no sequencer moved (the roles were given up for one
        # whole relay): they take their seqs before anything new
        while await worker.run(RelayStore.sequence_pending, 1000):
            pass
    ingest.start()
    ctx.resyncer.start()
    running = RunningRelay(ctx, url, runner)
    try:
        await ctx.hosts.start()
    except BaseException:
        await running.stop()
        raise
    loop = asyncio.get_running_loop()
    if ingest_only:  # the sequencer prunes the log; an ingest process picks up hosts added elsewhere
        running._maintenance = loop.create_task(ctx.hosts.follow_hosts(config.hosts_refresh_s))
    else:
        running._maintenance = loop.create_task(prune_forever(ctx.worker, ctx.config.retention_hours))
    log.info(
        "relay %slistening on %s (store %s, %d upstream hosts)",
        "ingest process " if ingest_only else "",
        url,
        store.location,
        len(ctx.hosts.links),
    )
    return running
