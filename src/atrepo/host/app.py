"""The repository host's process: store, worker, XRPC routes, embedded PLC directory, shutdown.

:func:`start_host` brings everything up and returns a :class:`RunningHost`;
``await running.stop()`` takes it down gracefully: the listening sockets
close first (no new requests), requests in progress get a few seconds to
finish, every write already queued on the store worker is committed
(``worker.close()``), then the store, the outbound HTTP session and the
embedded PLC directory close. ``atrepo serve`` (:mod:`atrepo.cli.serve`)
wires that to SIGTERM/SIGINT; tests call the same two functions on port 0.

Sockets are bound before anything is built, so that with port 0 (tests) the
public URL, the service DID and the PLC directory's URL are known when the
routes are declared and no request can see them unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from atrepo.core.keys import PrivateKey
from atrepo.core.lexicon import Registry
from atrepo.firehose import Fanout, mount_subscribe_repos
from atrepo.firehose.follow import LogFollower
from atrepo.identity.handle import HandleResolver
from atrepo.identity.plc.server import create_app as create_plc_app
from atrepo.lexicons import builtin_registry
from atrepo.store import Account, SQLiteStore, StoreWorker
from atrepo.store.base import EventRow
from atrepo.store.postgres import PostgresStore, open_host_store
from atrepo.xrpc import Metrics, XrpcRouter
from atrepo.xrpc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from atrepo.xrpc.ratelimit import HttpRateLimits
from atrepo.xrpc.server import bind_listener

from . import (
    accounts,
    admin,
    app_bsky,
    app_passwords,
    identity_api,
    importer,
    inbound_auth,
    lifecycle,
    proxy,
    repo_api,
    service_auth,
    sync_api,
)
from .auth import TokenAuthority
from .config import HostConfig, HostSecrets, LogFormat, load_secrets
from .status import add_host_status_routes

__all__ = ["HostContext", "Pruned", "RunningHost", "configure_logging", "start_host"]

log = logging.getLogger("atrepo.host")

#: How long requests in progress may run on after shutdown starts before they are cut.
SHUTDOWN_GRACE_S: Final = 10.0
#: Outbound calls (PLC directory, handle resolution): a bound on each.
OUTBOUND_TIMEOUT_S: Final = 10.0

#: How often expired refresh tokens, events past the retention window and stale uploads are pruned.
MAINTENANCE_INTERVAL_S: Final = 600.0
#: Store writer threads of a host on PostgreSQL. Each write there is a dozen round trips to the server,
#: so one thread spends most of its time waiting; several overlap the waits (writes of different
#: repositories commit side by side; the event counter row orders their commits). SQLite has one.
PG_WRITERS: Final = 4

#: How long an uploaded blob may stay unreferenced before it is deleted. A client uploads first
#: and creates the record that names the blob afterwards (an image post is two calls), so an
#: upload must outlive that gap, a retry after a lost reply included; the reference keeps
#: temporary blobs about as long.
TEMPORARY_BLOB_GRACE_S: Final = 3600.0

#: ``requestCrawl`` goes to each relay at start, then after writes at most this often
#: (the reference's ``Crawlers`` threshold: 20 minutes).
CRAWL_NOTIFY_INTERVAL_S: Final = 20 * 60.0

#: Parsed signing keys kept by :meth:`HostContext.signing_key` (all dropped when it is full).
SIGNING_KEY_CACHE: Final = 10_000

#: A callback told the new head seq of the event log after each committed write.
NotifyHook = Callable[[int], Any]


class CrawlNotifier:
    """Tells the configured relays to crawl us (``com.atproto.sync.requestCrawl``), rate-limited.

    A relay that has never heard of a host does not subscribe to it; one that
    dropped the connection may not come back on its own. ``poke`` is cheap and
    called after every write: it sends nothing to a relay notified less than
    ``interval`` seconds ago. Failures are logged, never raised: a relay being
    down must not fail a write.
    """

    def __init__(
        self,
        relays: tuple[str, ...],
        hostname: str,
        http: aiohttp.ClientSession,
        *,
        interval: float = CRAWL_NOTIFY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relays = tuple(r.rstrip("/") for r in relays)
        self.hostname = hostname
        self.interval = interval
        self._http = http
        self._clock = clock
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Notifications scheduled so far (all relays together).
        self.scheduled = 0

    def poke(self, _head_seq: int | None = None) -> None:
        """Notify every relay not notified within the interval (in the background)."""
        now = self._clock()
        for relay in self.relays:
            last = self._last.get(relay)
            if last is not None and now - last < self.interval:
                continue
            self._last[relay] = now
            self.scheduled += 1
            task = asyncio.get_running_loop().create_task(self._send(relay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, relay: str) -> None:
        url = f"{relay}/xrpc/com.atproto.sync.requestCrawl"
        try:
            async with self._http.post(url, json={"hostname": self.hostname}) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(500)).decode("utf-8", errors="replace")
                    log.warning("requestCrawl to %s: HTTP %d %s", relay, resp.status, text)
                else:
                    log.info("requestCrawl sent to %s", relay)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("requestCrawl to %s failed: %s", relay, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Pruned(NamedTuple):
    """What one :meth:`HostContext.prune` deleted."""

    events: int
    tokens: int
    blobs: int


@dataclass(eq=False)
class HostContext:
    """What every part of the running host shares; one per process, built by :func:`start_host`.

    Handlers receive it when they are declared (``accounts.register(router,
    host)``) and keep it; nothing here changes after start-up except
    ``notify_event``'s list.

    * ``config``: the frozen :class:`HostConfig`; ``secrets``: JWT secret and
      PLC rotation key (never log them).
    * ``store`` / ``worker``: the SQLite store and its one
      :class:`StoreWorker`. Writes go through ``await worker.run(fn, ...)``
      (``fn(store, ...)`` on the writer thread, typically one
      ``store.transaction(did)``); reads through ``await worker.read(...)``.
      Never call the store from the event loop.
    * ``registry``: the lexicons the router validates against.
    * ``tokens``: issues and verifies session JWTs; its ``verify_access`` is
      the ``auth=`` hook of every route that needs a session.
    * ``http``: the shared outbound ``aiohttp`` session (bounded timeouts).
    * ``plc_url``: the PLC directory in use (the embedded one when none was
      configured); ``public_url`` and ``service_did``: how this host is named.
    * ``signing_key(account)``: the account's repository signing key.
    * ``crawlers``: the relays to notify; already registered in ``notify_event``.
    * ``fanout``: the firehose's shared window of encoded frames; its
      ``notify`` is registered in ``notify_event`` (``subscribeRepos`` is served
      from it; started with the app, closed first at shutdown with code 1012).
    * ``notify_event``: callbacks, each called as ``hook(head_seq)`` on the event
      loop after every committed write that appended events, with the log's
      new head seq. The firehose registers its fan-out wake-up here. A hook
      must not block; it may return an awaitable, which is awaited. A hook
      that raises is logged and does not fail the write (already committed).
      Writers call :meth:`notify` after their ``worker.run`` returns (passing
      the events they appended, which the firehose then need not read back); it also
      counts commits and events for ``/metrics``.
    * :meth:`prune` is the maintenance pass (every ``MAINTENANCE_INTERVAL_S``):
      old events, expired refresh tokens, uploads unreferenced past
      ``TEMPORARY_BLOB_GRACE_S``.
    """

    config: HostConfig
    secrets: HostSecrets
    store: SQLiteStore
    worker: StoreWorker[SQLiteStore]
    registry: Registry
    tokens: TokenAuthority
    http: aiohttp.ClientSession
    handle_resolver: HandleResolver
    metrics: Metrics
    public_url: str
    plc_url: str
    crawlers: CrawlNotifier
    fanout: Fanout[SQLiteStore]
    #: Rate limits (disabled by ``rate_limits = false``): handlers charge theirs with ``charge``.
    rate_limits: HttpRateLimits
    notify_event: list[NotifyHook] = field(default_factory=list)

    def __post_init__(self) -> None:
        metrics = self.metrics
        self._head_seq = metrics.gauge(
            "atrepo_host_event_head_seq", "Seq of the newest event in the host's log (as last notified)"
        )
        self._commits = metrics.counter(
            "atrepo_host_commits_total", "Repository commits stored since start (genesis commits included)"
        )
        self._events = metrics.counter("atrepo_host_events_total", "Events appended to the log since start")
        self._writer_queue = metrics.gauge(
            "atrepo_host_store_writer_queue_depth", "Write jobs queued or running on the store writer thread"
        )
        self._pruned = metrics.counter(
            "atrepo_host_pruned_total", "Rows deleted by maintenance", labelnames=("kind",)
        )
        for counter in (self._commits, self._events):
            counter.inc(0)  # shown as 0 from the start: a scraper sees the series before the first write
        self._writer_queue.set(0)
        self._groups = metrics.counter(
            "atrepo_host_store_group_commits_total",
            "Transactions that committed several queued writes at once (one fsync for all)",
        )
        self._grouped = metrics.counter(
            "atrepo_host_store_grouped_writes_total", "Write jobs committed as part of a group commit"
        )
        self._groups.inc(0)
        self._grouped.inc(0)
        # the head when counting started: events counts what was appended after it
        self._counted_seq: int | None = None
        #: Awaitables of notify hooks run by notify_soon, kept until done.
        self._hook_tasks: set[asyncio.Future[Any]] = set()
        self._signing_keys: dict[bytes, PrivateKey] = {}

    def start_counting(self, head_seq: int) -> None:
        """Take the log's head at start-up as the base of ``atrepo_host_events_total``."""
        self._counted_seq = head_seq
        self._head_seq.set(head_seq)

    def sample_metrics(self) -> None:
        """Refresh the gauges read from live state (called by ``/metrics`` before it renders)."""
        self._writer_queue.set(self.worker.pending)
        # the worker counts on its thread; the counters catch up at each scrape
        self._groups.inc(self.worker.groups - int(self._groups.value()))
        self._grouped.inc(self.worker.grouped_jobs - int(self._grouped.value()))

    @property
    def service_did(self) -> str:
        """``did:web:<public hostname>``, as the reference's default service DID (token ``aud``)."""
        return service_did_for(self.public_url)

    def signing_key(self, account: Account) -> PrivateKey:
        """The account's repository signing key (stored as the raw secp256k1 scalar).

        Parsed keys are kept (up to ``SIGNING_KEY_CACHE`` accounts): building
        one derives its public key, an elliptic-curve multiplication that cost
        more than the signature itself on every write. The cache is keyed by
        the stored bytes, so a rotated key is never served stale. It may be
        called from the writer thread and the event loop at once; the worst a
        race does is parse a key twice.
        """
        raw = account.signing_key
        key = self._signing_keys.get(raw)
        if key is None:
            key = PrivateKey.from_bytes("k256", raw)
            if len(self._signing_keys) >= SIGNING_KEY_CACHE:
                self._signing_keys.clear()  # rare; single dict operations stay safe across threads
            self._signing_keys[raw] = key
        return key

    async def prune(self, *, now_ms: int | None = None) -> Pruned:
        """Delete events past retention, expired refresh tokens and stale temporary blobs; return the counts.

        Events and blobs go by the wall clock (the store stamps both with it),
        ``now_ms`` standing in for it (tests age uploads without waiting);
        tokens go by the token clock, the one their expiries were computed with.
        A temporary blob is an upload no record has referenced yet (the store
        deletes a blob as soon as its last reference goes): it is kept for
        ``TEMPORARY_BLOB_GRACE_S`` so that the record naming it can follow.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        retention_ms = int(self.config.event_retention_hours * 3600 * 1000)
        events = await self.worker.run(SQLiteStore.prune_events, now - retention_ms)
        tokens = await self.worker.run(SQLiteStore.prune_refresh_tokens, self.tokens.clock_ms())
        blobs = await self.worker.run(
            SQLiteStore.prune_temporary_blobs, now - int(TEMPORARY_BLOB_GRACE_S * 1000)
        )
        for kind, count in (("events", events), ("refresh_tokens", tokens), ("temporary_blobs", blobs)):
            if count:
                self._pruned.inc(count, (kind,))
        if events or tokens or blobs:
            log.info(
                "pruned %d events, %d expired refresh tokens and %d temporary blobs", events, tokens, blobs
            )
        return Pruned(events, tokens, blobs)

    async def notify(self, head_seq: int, *, commits: int = 1, events: Sequence[EventRow] = ()) -> None:
        """Count the write, then tell every ``notify_event`` hook that the log's head is now ``head_seq``.

        This is the one place every committed write passes through, so the
        commit and event counters live here. ``commits`` is how many commits
        the write stored (1 for a record write or an account's genesis; 0 for
        writes that append events without a commit). Events are counted as the
        head's advance past the highest seq seen, because concurrent writers can
        notify out of order, and a write whose caller was cancelled before
        notifying is still counted by the next one.
        """
        for hook, result in self._notify_now(head_seq, commits, events):
            try:
                await result
            except Exception:
                log.exception("notify hook %r failed for seq %d", hook, head_seq)

    def notify_soon(self, head_seq: int, *, commits: int = 1, events: Sequence[EventRow] = ()) -> None:
        """:meth:`notify`, run by the event loop right after the caller's current step.

        For a write handler about to reply: the reply goes out first and the
        counting and the firehose's wake-up follow at once, off the client's
        wait; they still run before the loop reads the next request (call
        order is kept, and the firehose and the counters already take
        notifications out of order). An awaitable a hook returns is run as a
        task.
        """
        asyncio.get_running_loop().call_soon(self._notify_later, head_seq, commits, events)

    def _notify_later(self, head_seq: int, commits: int, events: Sequence[EventRow]) -> None:
        for hook, result in self._notify_now(head_seq, commits, events):
            task = asyncio.ensure_future(result)
            self._hook_tasks.add(task)
            task.add_done_callback(functools.partial(self._hook_done, hook, head_seq))

    def _hook_done(self, hook: NotifyHook, head_seq: int, task: asyncio.Future[Any]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notify hook %r failed for seq %d", hook, head_seq, exc_info=task.exception())

    def _notify_now(
        self, head_seq: int, commits: int, events: Sequence[EventRow]
    ) -> list[tuple[NotifyHook, Awaitable[Any]]]:
        """The synchronous part of :meth:`notify`; returns the awaitables hooks returned."""
        self._commits.inc(commits)
        if self._counted_seq is None:
            self._counted_seq = head_seq
        elif head_seq > self._counted_seq:
            self._events.inc(head_seq - self._counted_seq)
            self._counted_seq = head_seq
        self._head_seq.set(max(head_seq, int(self._head_seq.value())))
        if events:  # the firehose takes the write's own events instead of reading them back
            self.fanout.offer(events)
        pending: list[tuple[NotifyHook, Awaitable[Any]]] = []
        for hook in list(self.notify_event):
            try:
                result = hook(head_seq)
                if inspect.isawaitable(result):
                    pending.append((hook, result))
            except Exception:
                log.exception("notify hook %r failed for seq %d", hook, head_seq)
        return pending


def service_did_for(public_url: str) -> str:
    host = urlsplit(public_url).hostname or "localhost"
    return f"did:web:{host}"


@dataclass(eq=False)
class RunningHost:
    """A started host: its URL, its context, and :meth:`stop`."""

    context: HostContext
    url: str
    plc_url: str
    _runner: web.AppRunner
    _plc_runner: web.AppRunner | None
    _maintenance: asyncio.Task[None] | None = None
    #: Follows the events other processes commit (a PostgreSQL store), None otherwise.
    _follower: LogFollower | None = None
    _stopped: bool = False

    async def stop(self) -> None:
        """Stop accepting, let requests finish, commit queued writes, close everything (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down")
        ctx = self.context
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self._follower is not None:
            await self._follower.stop()
        try:
            # subscribers first (close 1012, "service restart"): open WebSockets would
            # otherwise hold the runner's cleanup until its timeout
            await ctx.fanout.close()
            await self._runner.cleanup()  # closes the sockets, waits for handlers, runs on_cleanup
        finally:
            try:
                await ctx.worker.close()  # queued writes are committed before this returns
            finally:
                ctx.store.close()
                await ctx.crawlers.close()
                await ctx.handle_resolver.close()
                await ctx.http.close()
                if self._plc_runner is not None:
                    await self._plc_runner.cleanup()
        log.info("stopped")


def build_app(host: HostContext, router: XrpcRouter) -> web.Application:
    """The aiohttp application: XRPC routes, ``/xrpc/_health``, ``/metrics``, the status page.

    A ``fanout`` process mounts only what reads the store: the sync API and
    the firehose (every other method is then ``MethodNotImplemented``).
    """
    inbound = inbound_auth.InboundAuth(host)  # verifies service-auth tokens sent to us; DID cache
    service_proxy: proxy.ServiceProxy | None = None
    if host.config.role == "host":
        accounts.register(router, host, inbound)  # inbound: createAccount with an existing DID
        lifecycle.register(router, host)
        admin.register(router, host)
        app_passwords.register(router, host)
        identity_api.register(router, host, inbound)
        repo_api.register(router, host)
        importer.register(router, host)
    sync_api.register(router, host)
    if host.config.role == "host":
        app_bsky.register(router, host)
        service_auth.register(router, host)
        service_proxy = proxy.register(router, host)
    mount_subscribe_repos(router, host.store, host.worker, host.fanout)
    app = web.Application()
    if service_proxy is not None:
        proxy.attach(app, service_proxy)
    inbound_auth.attach(app, inbound)
    admin.attach(app, host)
    router.setup(app)
    host.rate_limits.install(app)  # after the router's CORS middleware: preflights are not counted
    app.router.add_get("/metrics", _metrics_handler(host, router.metrics), allow_head=True)

    async def atproto_did(request: web.Request) -> web.Response:
        """``/.well-known/atproto-did`` for a local handle named by the ``Host`` header (accounts.md §1)."""
        name = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        account = await host.worker.read(SQLiteStore.get_account_by_handle, name.lower())
        if account is None:
            return web.Response(status=404, text="User not found\n")
        return web.Response(text=account.did, content_type="text/plain")

    add_host_status_routes(app, host)  # "/" (status page or short text), /status.json, assets
    app.router.add_get("/.well-known/atproto-did", atproto_did)
    return app


def _metrics_handler(host: HostContext, metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/metrics``, refreshing the sampled gauges (writer queue depth) before rendering."""

    async def handle(request: web.Request) -> web.Response:
        host.sample_metrics()
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    return handle


async def start_plc(config: HostConfig) -> tuple[web.AppRunner, str]:
    """The embedded PLC directory on ``plc_port``, data in ``plc_dir``: its runner and URL."""
    sock = bind_listener(config.host, config.plc_port)
    port = sock.getsockname()[1]
    runner = web.AppRunner(create_plc_app(config.plc_dir), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    host = f"[{config.host}]" if ":" in config.host else config.host
    return runner, f"http://{host}:{port}"


async def start_host(
    config: HostConfig,
    *,
    clock_ms: Callable[[], int] | None = None,
    validate_output: bool = False,
) -> RunningHost:
    """Start the host (and, without a configured PLC URL, its own directory) and return it running.

    ``clock_ms`` replaces the wall clock of session tokens (tests of expiry
    and rotation grace, and of rate-limit windows); ``validate_output`` checks every reply against its
    lexicon (tests, development).
    """
    secrets_ = load_secrets(config)
    if secrets_.admin_password_file is not None:  # where to find it, never the password itself
        log.info("admin password (HTTP Basic admin:<password>) is in %s", secrets_.admin_password_file)
    plc_runner: web.AppRunner | None = None
    plc_url = config.plc_url.rstrip("/") if config.plc_url else ""
    if not plc_url and config.role == "host":  # a fanout process creates no identities
        plc_runner, plc_url = await start_plc(config)
        log.info("embedded PLC directory at %s (data in %s)", plc_url, config.plc_dir)
    sock: socket.socket | None = None
    store: SQLiteStore | None = None
    worker: StoreWorker[SQLiteStore] | None = None
    http: aiohttp.ClientSession | None = None
    follower: LogFollower | None = None
    try:
        sock = bind_listener(config.host, config.port, reuse_port=config.worker is not None)
        port = sock.getsockname()[1]
        public_url = config.resolved_public_url(port)
        store = open_host_store(config.data_dir, config.database)
        worker = (
            # PostgreSQL serializes each repository's writes itself (an advisory lock per DID), so
            # several writer threads commit side by side; see PG_WRITERS.
            StoreWorker(store, writers=PG_WRITERS, group_max=1)
            if isinstance(store, PostgresStore)
            # One writer on a local file: a small write runs on the event loop when the writer is
            # idle (StoreWorker.run_short), saving two thread hand-overs per write.
            else StoreWorker(store, inline=True)
        )
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OUTBOUND_TIMEOUT_S))
        registry = builtin_registry()
        tokens = (
            TokenAuthority(secrets_.jwt_secret, service_did_for(public_url))
            if clock_ms is None
            else TokenAuthority(secrets_.jwt_secret, service_did_for(public_url), clock_ms=clock_ms)
        )

        async def health(worker: StoreWorker[SQLiteStore] = worker) -> None:
            await worker.read(SQLiteStore.head_seq)

        router = XrpcRouter(registry, validate_output=validate_output, health_check=health)
        host = HostContext(
            config=config,
            secrets=secrets_,
            store=store,
            worker=worker,
            registry=registry,
            tokens=tokens,
            http=http,
            handle_resolver=HandleResolver(session=http, timeout=OUTBOUND_TIMEOUT_S),
            metrics=router.metrics,
            public_url=public_url,
            plc_url=plc_url,
            crawlers=CrawlNotifier(config.relays, urlsplit(public_url).netloc, http),
            fanout=Fanout(worker),
            rate_limits=HttpRateLimits(
                router.metrics,
                config.rate_rules() if config.rate_limits else None,
                trust_proxy=config.trust_proxy,
                clock_ms=clock_ms,
            ),
        )
        host.start_counting(await worker.read(SQLiteStore.head_seq))
        if config.role == "host":
            host.notify_event.append(host.crawlers.poke)
        host.notify_event.append(host.fanout.notify)
        app = build_app(host, router)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        await host.fanout.start()
        if isinstance(store, PostgresStore):
            # Other processes may write to this database too (host workers): their events reach
            # this process's subscribers through the notifications each commit sends.
            follower = LogFollower(
                store.listener,
                functools.partial(worker.read, SQLiteStore.head_seq),
                host.fanout.notify,
                name="host event log",
            )
            follower.start()
        await web.SockSite(runner, sock).start()
    except BaseException:
        if follower is not None:
            await follower.stop()
        if sock is not None:
            sock.close()
        if worker is not None:
            await worker.close()
        if http is not None:
            await http.close()
        if store is not None:
            store.close()
        if plc_runner is not None:
            await plc_runner.cleanup()
        raise
    maintenance: asyncio.Task[None] | None = None
    if config.runs_maintenance:
        host.crawlers.poke()
        maintenance = asyncio.create_task(_maintain(host), name="atrepo-host-maintenance")
    host_part = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host_part}:{port}"
    log.info(
        "%s listening on %s (public URL %s, service DID %s)",
        "host" if config.role == "host" else "firehose fan-out (sync reads only)",
        url,
        public_url,
        host.service_did,
    )
    return RunningHost(
        context=host,
        url=url,
        plc_url=plc_url,
        _runner=runner,
        _plc_runner=plc_runner,
        _maintenance=maintenance,
        _follower=follower,
    )


async def _maintain(host: HostContext) -> None:
    """Prune at start and then every ``MAINTENANCE_INTERVAL_S``, until cancelled at shutdown."""
    while True:
        try:
            await host.prune()
        except Exception:
            log.exception("maintenance failed; retrying at the next interval")
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)


# --- logs ------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors parse without a grammar."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    """Send atrepo's logs to stderr as text or JSON lines (replacing handlers set earlier)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Neither format prints the caller's file and line, the thread or the process: a
    # server logs a line per request, so skip collecting them (the knobs the logging
    # module documents under "Optimization"; finding the caller walks the stack).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
