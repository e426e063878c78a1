"""Upstream hosts: where they come from, their connections, their states, and how they recover.

Operators of today's relays report hosts dropped for good after a few
failed dials or one ``FutureCursor`` while ``requestCrawl`` claimed success,
and new hosts capped with no visible reason. Here:

* **Where hosts come from.** ``--upstream`` (configured: trusted, any
  address, no daily limit) and ``requestCrawl`` (a public DNS name whose
  addresses are all public, a ``describeServer`` that answers, not banned,
  within the new-hosts-per-day limit). ``requestCrawl`` answers only after
  the host is stored and its subscription started, and says why when it
  refuses.
* **States** (``listHosts``, the status page): ``active`` (connected or
  connecting), ``idle`` (the upstream told us our cursor is ahead of it:
  ``FutureCursor``; the relay then replays the upstream's whole window, in
  which duplicates are recognised by rev), ``offline`` (``OFFLINE_AFTER``
  consecutive failed connections; the subscriber keeps trying with backoff up
  to ``OFFLINE_BACKOFF_S``, so a host that comes back is picked up without
  anyone asking), ``throttled`` (waiting for its rate limit), ``banned``
  (not connected). Every state change stores the reason (``last_error``).
* **Seeding.** A new host's accounts are read from its ``listRepos``, each
  checked against its DID document and its head commit fetched and its
  signature checked, so the relay's ``listRepos`` has every account from the
  start, at its current commit, and the first live commit chains.
* **Account limits** have a visible reason (a fault per account kept as
  ``throttled``, and the limit on the status page); raising a limit
  backfills the throttled accounts (:meth:`Ingest.begin_backfill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import aiohttp

from atrepo.core.car import read_car
from atrepo.core.commit import decode_commit
from atrepo.core.errors import (
    AtrepoError,
    HostBanned,
    HostNotFound,
    InvalidRequest,
    RateLimitExceeded,
    StoreUnavailable,
)
from atrepo.firehose.subscriber import CursorAction, Received, Subscriber, SubscriberHooks
from atrepo.store.relay import HostRow, RelayAccount, RelayStore
from atrepo.store.worker import StoreWorker

from .config import RelayConfig, host_partition
from .hostnames import HostName, check_public_address, hostname_of_endpoint, parse_host
from .limits import Budget, EventRateLimiter, budget_for

if TYPE_CHECKING:
    from .app import RelayContext

__all__ = ["HostLink", "HostManager"]

log = logging.getLogger("atrepo.relay.hosts")

#: Consecutive failed connections after which a host is shown ``offline`` (the reference: 15).
OFFLINE_AFTER: Final = 5
#: Longest wait between reconnection attempts (offline hosts are re-probed this often at least).
OFFLINE_BACKOFF_S: Final = 300.0
#: How long ``requestCrawl``'s ``describeServer`` probe may take.
PROBE_TIMEOUT_S: Final = 10.0
#: Seeding: ``listRepos`` page size and concurrent head-commit fetches.
SEED_PAGE: Final = 1000
SEED_CONCURRENCY: Final = 8


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def probe_host(http: aiohttp.ClientSession, name: HostName) -> None:
    """``requestCrawl``'s check that ``name`` is a host: its ``describeServer`` answers with a DID."""
    url = f"{name.url}/xrpc/com.atproto.server.describeServer"
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with http.get(url, timeout=timeout, allow_redirects=False) as resp:
            body = await resp.content.read(65536)
            if resp.status != 200:
                raise HostNotFound(f"{name.key} answered describeServer with HTTP {resp.status}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise HostNotFound(f"{name.key} did not answer describeServer: {exc}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("did"), str):
        raise HostNotFound(f"{name.key}: describeServer did not answer as a host (no did)")


async def register_crawl(
    worker: StoreWorker[RelayStore], http: aiohttp.ClientSession, config: RelayConfig, hostname: str
) -> HostRow:
    """``requestCrawl`` on the sequencer (``--role sequencer``): the whole relay's checks, then store.

    The host is only stored: the ingest process of its partition takes it
    when it next reads the hosts table (:meth:`HostManager.adopt_new_hosts`),
    seeds it and subscribes. A host already known answers at once (a banned
    one with ``HostBanned``).
    """
    name = parse_host(hostname, configured=config.crawl_allow_private)
    if await worker.read(RelayStore.is_banned, name.host):
        raise HostBanned(f"host {name.key} is banned here")
    known = await worker.read(RelayStore.get_host_by_name, name.key)
    if known is not None:
        if known.status == "banned":
            raise HostBanned(f"host {name.key} is banned here")
        return known
    since = _now_ms() - 24 * 3600 * 1000
    if await worker.read(RelayStore.count_hosts_created_since, since) >= config.new_hosts_per_day:
        raise RateLimitExceeded(
            f"this relay adds at most {config.new_hosts_per_day} new hosts a day; try again later"
        )
    if not config.crawl_allow_private:
        await check_public_address(name.host, name.port)
    await probe_host(http, name)
    row = await worker.run(
        RelayStore.add_host,
        name.key,
        name.url,
        configured=False,
        trusted=False,
        account_limit=config.default_account_limit,
        now_ms=_now_ms(),
    )
    log.info("requestCrawl: stored %s for its ingest partition", row.hostname)
    return row


class HostLink:
    """One upstream host while the relay runs: its row, its subscriber, its rate limiter, its counters."""

    def __init__(self, row: HostRow, manager: HostManager) -> None:
        self.manager = manager
        self.id = row.id
        self.key = row.hostname
        self.url = row.url
        self.row = row
        self.account_limit = row.account_limit
        self.account_count = row.account_count
        self.last_event_ms: int | None = row.last_event_ms
        self.status = row.status
        self.last_error = row.last_error
        self.limiter = EventRateLimiter(self.budget())
        self.subscriber: Subscriber | None = None
        self.task: asyncio.Task[None] | None = None
        self.seeding = False
        self.seeded_accounts = 0
        #: (minute, events) of the last few minutes, for "events per minute".
        self._minutes: deque[list[int]] = deque(maxlen=6)

    def budget(self) -> Budget:
        row = self.row
        return budget_for(
            row.account_limit,
            trusted=row.trusted or row.configured,
            per_second=row.rate_per_second,
            per_hour=row.rate_per_hour,
            per_day=row.rate_per_day,
        )

    @property
    def cursor(self) -> int | None:
        if self.subscriber is not None:
            return self.subscriber.cursor
        return self.row.last_seq if self.row.last_seq >= 0 else None

    def events_per_minute(self) -> int:
        """Events in the last full minute (the current one when the host just started)."""
        minute = int(time.time() // 60)
        for start, count in reversed(self._minutes):
            if start == minute - 1:
                return count
        return self._minutes[-1][1] if self._minutes and self._minutes[-1][0] == minute else 0

    async def admit(self) -> None:
        minute = int(time.time() // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += 1
        else:
            self._minutes.append([minute, 1])
        delay = self.limiter.delay()
        if delay <= 0:
            return
        previous = self.status
        await self.manager.set_status(self, "throttled", "rate limit: waiting for the host's event budget")
        while delay > 0:
            self.limiter.waited_s += min(delay, 1.0)
            await asyncio.sleep(min(delay, 1.0))
            delay = self.limiter.delay()
        if self.status == "throttled":
            await self.manager.set_status(self, "active" if previous == "throttled" else previous, None)

    def to_json(self) -> dict[str, Any]:
        sub = self.subscriber
        return {
            "hostname": self.key,
            "status": self.status,
            "cursor": self.cursor,
            "accounts": self.account_count,
            "accountLimit": self.account_limit,
            "eventsPerMinute": self.events_per_minute(),
            "lastError": self.last_error,
            "lastEventMs": self.last_event_ms,
            "connected": bool(sub is not None and sub.connected),
            "failures": sub.failures if sub is not None else 0,
            "configured": self.row.configured,
        }


class _Hooks(SubscriberHooks):
    def __init__(self, link: HostLink) -> None:
        self.link = link

    def _spawn(self, status: str, error: str | None) -> None:
        manager = self.link.manager
        task = asyncio.get_running_loop().create_task(manager.set_status(self.link, status, error))
        manager._tasks.add(task)
        task.add_done_callback(manager._tasks.discard)

    def connected(self, url: str, cursor: int | None) -> None:
        log.info("connected to %s (cursor %s)", self.link.key, cursor)
        if self.link.status in ("offline", "idle"):
            self._spawn("active", None)

    def disconnected(self, reason: str, failures: int) -> None:
        link = self.link
        if failures >= OFFLINE_AFTER and link.status != "offline":
            self._spawn("offline", f"{failures} connection attempts failed; last: {reason}")
        elif failures == 0 or failures < OFFLINE_AFTER:
            link.last_error = reason
            log.info("%s: disconnected (%s); %d failed attempts", link.key, reason, failures)

    def error_frame(self, name: str, message: str | None) -> CursorAction:
        link = self.link
        text = f"{name}: {message}" if message else name
        link.manager.ctx.ingest.fault("upstream-error", link, None, text)
        if name == "FutureCursor":
            # our cursor is ahead of the host: its seq went back (a restore, a reset). Replay its whole
            # window; duplicates are recognised by rev, gaps by the chain check.
            self._spawn("idle", f"FutureCursor at cursor {link.cursor}: the host's seq went back; replaying")
            return CursorAction.FROM_ZERO
        return CursorAction.RECONNECT

    def info(self, name: str, message: str | None) -> None:
        log.info("%s: #info %s %s", self.link.key, name, message or "")

    def bad_frame(self, error: AtrepoError, raw: bytes) -> None:
        self.link.manager.ctx.ingest.fault("bad-frame", self.link, None, str(error))

    def dropped(self, seq: int, why: str) -> None:
        self.link.manager.ctx.ingest.drop("seq-order")


class HostManager:
    """Every upstream host: start, add, crawl, ban, limit, stop."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        self.links: dict[int, HostLink] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._reconnecting = asyncio.Lock()
        #: Set by :meth:`stop`: no upstream connects and no reconnection starts after it.
        self._stopping = False
        ctx.ingest.on_batch_failure = self._after_failed_batch

    def _after_failed_batch(self) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self.reconnect_all())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconnect_all(self) -> None:
        """Reconnect every connected upstream from the cursor the store holds (after a failed batch).

        A batch fails mostly because the database went away (a PostgreSQL
        restart): then the upstreams stay disconnected, and nothing more is
        staged to fail again, until the store answers; the stored cursors are
        read then, so no event is skipped. Never raises: a relay that gave up
        here would stay silent with every upstream disconnected.
        """
        async with self._reconnecting:
            try:
                links = [link for link in self.links.values() if link.task is not None]
                for link in links:
                    await self._disconnect(link)
                rows = await self._stored_rows([link.id for link in links])
                for link in links:
                    row = rows.get(link.id)
                    if row is not None:
                        link.row = row
                        link.account_count = row.account_count
                    if link.status != "banned" and link.task is None and self.links.get(link.id) is link:
                        self._connect(link)
            except Exception:
                log.exception("reconnecting the upstreams after a failed batch failed")

    async def _stored_rows(self, ids: list[int]) -> dict[int, HostRow | None]:
        """The hosts' stored rows; while the store is unavailable, retried after a pause (doubling to 5 s)."""
        delay = 0.25
        while True:
            try:
                return {i: await self.ctx.worker.read(RelayStore.get_host, i) for i in ids}
            except StoreUnavailable as exc:
                log.warning(
                    "store unavailable; %d upstreams reconnect when it answers (next try in %.2g s): %s",
                    len(ids),
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def store(self) -> RelayStore:
        return self.ctx.store

    def by_name(self, hostname: str) -> HostLink | None:
        for link in self.links.values():
            if link.key == hostname:
                return link
        return None

    async def start(self) -> None:
        """Connect to every stored host that is not banned; add the configured ones."""
        if self.partitioned:
            await self._start_partition()
            return
        rows: list[HostRow] = []
        after = 0
        while True:
            page = await self.ctx.worker.read(RelayStore.list_hosts, after_id=after, limit=500)
            rows.extend(page)
            if len(page) < 500:
                break
            after = page[-1].id
        for row in rows:
            self._link(row)
        for url in self.ctx.config.upstreams:
            await self.add_configured(url)
        for link in list(self.links.values()):
            if link.status != "banned" and link.task is None:
                self._connect(link)
        await self._restart_resyncs()

    @property
    def partitioned(self) -> bool:
        """This is an ingest process (``--role ingest --partition I/N``): some hosts are another's."""
        return self.ctx.config.role == "ingest" and self.ctx.config.partition is not None

    def mine(self, hostname: str) -> bool:
        """Whether this process ingests ``hostname``: always, but in an ingest process only the hosts
        whose name hashes to its partition ``I`` (:func:`~atrepo.relay.config.host_partition`)."""
        partition = self.ctx.config.partition
        if partition is None or not self.partitioned:
            return True
        index, count = partition
        return host_partition(hostname, count) == index

    async def _start_partition(self) -> None:
        """An ingest process's start: store every ``--upstream`` (the others' too, so that a host given
        to the wrong process still reaches its own), then take the partition's hosts.

        Which host is seeded is decided from its row, not from who stored it: a host that never had a
        cursor nor an account (:meth:`adopt_new_hosts`). With ``--replay`` a host stored here starts at
        cursor 0 instead.
        """
        config = self.ctx.config
        for url in config.upstreams:
            name = parse_host(url, configured=True)
            if await self.ctx.worker.read(RelayStore.get_host_by_name, name.key) is not None:
                continue
            row = await self.ctx.worker.run(
                RelayStore.add_host,
                name.key,
                name.url,
                configured=True,
                trusted=True,
                account_limit=config.trusted_account_limit,
                now_ms=_now_ms(),
            )
            if config.replay_upstreams:
                await self.ctx.worker.run(RelayStore.set_host_cursor, row.id, 0)
        await self.adopt_new_hosts()
        await self._restart_resyncs()

    async def follow_hosts(self, every_s: float) -> None:
        """An ingest process: every ``every_s``, take the hosts of its partition added by another
        process (``requestCrawl`` on the sequencer, another ingest process's ``--upstream``)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.adopt_new_hosts()
            except Exception as exc:
                log.warning("reading the hosts table again failed: %s", exc)

    async def adopt_new_hosts(self) -> list[HostLink]:
        """Link, seed (a host that never had a cursor nor an account) and connect the partition's hosts
        not yet here."""
        adopted: list[HostLink] = []
        after = 0  # all of it: a row whose id was allocated before another's may commit after it
        while True:
            page = await self.ctx.worker.read(RelayStore.list_hosts, after_id=after, limit=500)
            for row in page:
                if row.id in self.links or not self.mine(row.hostname):
                    continue
                async with self._lock:
                    if row.id in self.links:
                        continue
                    link = self._link(row)
                adopted.append(link)
                log.info("taking host %s (added by another process)", link.key)
                if link.status == "banned":
                    continue
                if row.last_seq < 0 and row.account_count == 0:
                    await self.seed(link)
                self._connect(link)
            if len(page) < 500:
                return adopted
            after = page[-1].id

    async def _restart_resyncs(self) -> None:
        """Accounts left desynchronized (a resync cut short by a restart) are fetched again."""
        ingest = self.ctx.ingest
        for link in self.links.values():
            if link.status == "banned":
                continue
            after: str | None = None
            while True:
                page = await self.ctx.worker.read(
                    RelayStore.list_host_accounts, link.id, status="desynchronized", after=after, limit=500
                )
                for account in page:
                    ingest.begin_resync(link, account, "desynchronized at start", announce=False)
                if len(page) < 500:
                    break
                after = page[-1].did

    def _link(self, row: HostRow) -> HostLink:
        link = HostLink(row, self)
        self.links[row.id] = link
        self.ctx.ingest.hosts[row.id] = link
        return link

    def _connect(self, link: HostLink) -> None:
        if self._stopping:  # a reconnection or an add that raced stop(): it would outlive the relay
            log.debug("%s: not connecting, the relay is stopping", link.key)
            return
        ingest = self.ctx.ingest

        async def handle(received: Received) -> None:
            await ingest.handle(link, received)

        link.subscriber = Subscriber(
            link.url,
            handle,
            cursor=link.row.last_seq if link.row.last_seq >= 0 else None,
            hooks=_Hooks(link),
            session=self.ctx.http,
            backoff_max=OFFLINE_BACKOFF_S,
            lanes=self.ctx.config.lanes,
            max_in_flight=self.ctx.config.max_in_flight,
            prefetch=ingest.prefetch if self.ctx.verifier.workers else None,
        )
        link.task = asyncio.get_running_loop().create_task(self._run(link), name=f"relay-host-{link.key}")

    async def _run(self, link: HostLink) -> None:
        subscriber = link.subscriber
        assert subscriber is not None
        try:
            await subscriber.run()
        except Exception:
            log.exception("subscriber of %s failed", link.key)
            await self.set_status(
                link, "offline", "the subscriber stopped on an internal error (see the log)"
            )

    async def _disconnect(self, link: HostLink) -> None:
        if link.subscriber is not None:
            link.subscriber.stop()
        if link.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(link.task, timeout=10.0)
        link.subscriber = None
        link.task = None

    async def set_status(self, link: HostLink, status: str, error: str | None) -> None:
        if link.status == status and error is None:
            return
        link.status = status
        if error is not None:
            link.last_error = error
            log.warning("host %s is %s: %s", link.key, status, error)
        elif status == "active":
            link.last_error = None
        link.row = await self.ctx.worker.run(
            RelayStore.set_host_status, link.id, status, error=error, now_ms=_now_ms()
        )
        self.ctx.host_status_changed(link)

    # --- adding hosts --------------------------------------------------------------------

    async def add_configured(self, url: str) -> HostLink:
        """A host from ``--upstream``: trusted, any address, never limited by the daily cap."""
        name = parse_host(url, configured=True)
        async with self._lock:
            existing = await self.ctx.worker.read(RelayStore.get_host_by_name, name.key)
            if existing is not None and existing.id in self.links:
                return self.links[existing.id]
            row = await self.ctx.worker.run(
                RelayStore.add_host,
                name.key,
                name.url,
                configured=True,
                trusted=True,
                account_limit=self.ctx.config.trusted_account_limit,
                now_ms=_now_ms(),
            )
            link = self._link(row)
        if existing is None:
            if self.ctx.config.replay_upstreams:
                await self.ctx.worker.run(RelayStore.set_host_cursor, link.id, 0)
                link.row = dataclasses.replace(link.row, last_seq=0)
            else:
                await self.seed(link)
        return link

    async def request_crawl(self, hostname: str) -> HostLink:
        """``requestCrawl``: check, probe, store, seed, subscribe; or say why not."""
        # --crawl-allow-private (development) takes a requestCrawl as if the host were configured:
        # loopback, a port and plain http (a local host's CrawlNotifier sends "127.0.0.1:2583")
        name = parse_host(hostname, configured=self.ctx.config.crawl_allow_private)
        if await self.ctx.worker.read(RelayStore.is_banned, name.host):
            raise HostBanned(f"host {name.key} is banned here")
        known = self.by_name(name.key)
        if known is not None:
            if known.status == "banned":
                raise HostBanned(f"host {name.key} is banned here")
            if known.status in ("offline", "idle") or known.task is None or known.task.done():
                await self._disconnect(known)
                await self.set_status(known, "active", None)
                self._connect(known)
                log.info("requestCrawl revived %s", known.key)
            return known
        config = self.ctx.config
        since = _now_ms() - 24 * 3600 * 1000
        if (
            await self.ctx.worker.read(RelayStore.count_hosts_created_since, since)
            >= config.new_hosts_per_day
        ):
            raise RateLimitExceeded(
                f"this relay adds at most {config.new_hosts_per_day} new hosts a day; try again later"
            )
        if not config.crawl_allow_private:
            await check_public_address(name.host, name.port)
        await self._probe(name)
        async with self._lock:
            row = await self.ctx.worker.run(
                RelayStore.add_host,
                name.key,
                name.url,
                configured=False,
                trusted=False,
                account_limit=config.default_account_limit,
                now_ms=_now_ms(),
            )
            link = self.links.get(row.id) or self._link(row)
        log.info("requestCrawl: added %s (account limit %d)", link.key, link.account_limit)
        await self.seed(link)
        self._connect(link)
        return link

    async def _probe(self, name: HostName) -> None:
        await probe_host(self.ctx.http, name)

    # --- seeding -------------------------------------------------------------------------

    async def seed(self, link: HostLink) -> int:
        """Read the host's ``listRepos`` and store each account it really hosts; return how many."""
        link.seeding = True
        added = 0
        sem = asyncio.Semaphore(SEED_CONCURRENCY)
        try:
            cursor: str | None = None
            for _ in range(100_000):  # pages; bounded
                page, cursor = await self._list_repos(link, cursor)
                accounts = await asyncio.gather(*(self._seed_one(link, repo, sem) for repo in page))
                rows = [a for a in accounts if a is not None]
                if rows:
                    for row in rows:
                        self.ctx.ingest.stage(row, host=link)
                    added += len(rows)
                if cursor is None or not page:
                    break
        except (AtrepoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.ctx.ingest.fault("seed", link, None, f"listRepos failed after {added} accounts: {exc}")
        finally:
            link.seeding = False
        link.seeded_accounts += added
        if added:
            log.info("seeded %d accounts from %s", added, link.key)
        return added

    async def _list_repos(
        self, link: HostLink, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        url = f"{link.url}/xrpc/com.atproto.sync.listRepos?limit={SEED_PAGE}"
        if cursor:
            url += f"&cursor={quote(cursor)}"
        async with self.ctx.http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            if resp.status != 200:
                raise InvalidRequest(f"listRepos answered HTTP {resp.status}")
            body = await resp.json(content_type=None)
        repos = body.get("repos") if isinstance(body, dict) else None
        if not isinstance(repos, list):
            raise InvalidRequest("listRepos answered without a repos list")
        next_cursor = body.get("cursor")
        return [r for r in repos if isinstance(r, dict)], next_cursor if isinstance(
            next_cursor, str
        ) else None

    async def _seed_one(
        self, link: HostLink, repo: dict[str, Any], sem: asyncio.Semaphore
    ) -> RelayAccount | None:
        ingest = self.ctx.ingest
        did = repo.get("did")
        if not isinstance(did, str):
            return None
        async with sem:
            existing = await ingest.account(did)
            if existing is not None and existing.host_id == link.id:
                return None
            try:
                doc = await ingest.resolver.resolve(did, force_refresh=existing is not None)
            except AtrepoError as exc:
                ingest.fault("identity", link, did, f"seeding: cannot resolve: {exc}")
                return None
            if doc.pds_endpoint is None or hostname_of_endpoint(doc.pds_endpoint) != link.key:
                ingest.fault("authority", link, did, f"seeding: the DID document names {doc.pds_endpoint!r}")
                return None
            rev = repo.get("rev") if isinstance(repo.get("rev"), str) else None
            head = repo.get("head") if isinstance(repo.get("head"), str) else None
            commit = data = None
            if head is not None and doc.signing_key is not None:
                try:
                    commit_obj = await self._head_commit(link, did, head)
                    commit_obj.verify(doc.signing_key)
                    if commit_obj.did == did:
                        commit, data, rev = commit_obj.cid, commit_obj.data, commit_obj.rev
                except (AtrepoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    ingest.fault("seed", link, did, f"head commit {head}: {exc}")
            if head is not None:
                await self._seed_collections(link, did)
        active = repo.get("active", True) is not False
        upstream = "active" if active else str(repo.get("status") or "inactive")
        now = _now_ms()
        status = "active"
        if existing is None:
            if link.account_count >= link.account_limit:
                status = "throttled"
                ingest.fault(
                    "account-limit", link, did, f"host is at its account limit ({link.account_limit})"
                )
            link.account_count += 1
            return RelayAccount(did, link.id, status, upstream, rev, commit, data, now, now)
        old = self.links.get(existing.host_id)
        if old is not None:
            old.account_count = max(0, old.account_count - 1)
        link.account_count += 1
        return RelayAccount(
            did, link.id, existing.status, upstream, rev, commit, data, existing.created_ms, now
        )

    async def _seed_collections(self, link: HostLink, did: str) -> None:
        """The account's collections for the index, from ``describeRepo`` (best effort)."""
        url = f"{link.url}/xrpc/com.atproto.repo.describeRepo?repo={quote(did)}"
        try:
            async with self.ctx.http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if resp.status != 200:
                    return
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return
        names = body.get("collections") if isinstance(body, dict) else None
        if isinstance(names, list):
            self.ctx.ingest.replace_collections(did, sorted({n for n in names if isinstance(n, str)}))

    async def _head_commit(self, link: HostLink, did: str, head: str) -> Any:
        url = f"{link.url}/xrpc/com.atproto.sync.getBlocks?did={quote(did)}&cids={quote(head)}"
        async with self.ctx.http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            if resp.status != 200:
                raise InvalidRequest(f"getBlocks answered HTTP {resp.status}")
            data = await resp.content.read(1 << 20)
        _roots, blocks = read_car(data, max_bytes=1 << 20)
        for cid, raw in blocks.items():
            if str(cid) == head:
                return decode_commit(raw, cid)
        raise InvalidRequest(f"getBlocks did not return {head}")

    # --- operator actions ----------------------------------------------------------------

    async def ban(self, hostname: str) -> bool:
        link = self.by_name(hostname.lower())
        if link is None:
            return False
        await self._disconnect(link)
        await self.set_status(link, "banned", "banned by the operator")
        return True

    async def unban(self, hostname: str) -> bool:
        link = self.by_name(hostname.lower())
        if link is None or link.status != "banned":
            return False
        await self.set_status(link, "active", None)
        self._connect(link)
        return True

    async def set_limits(self, hostname: str, **limits: Any) -> HostLink:
        link = self.by_name(hostname.lower())
        if link is None:
            raise HostNotFound(f"no host {hostname} at this relay")
        old_limit = link.account_limit
        link.row = await self.ctx.worker.run(RelayStore.set_host_limits, link.id, **limits)
        link.account_limit = link.row.account_limit
        link.limiter.set_budget(link.budget())
        if link.account_limit > old_limit:
            await self._backfill_throttled(link)
        return link

    async def _backfill_throttled(self, link: HostLink) -> None:
        """Raising a limit: throttled accounts within the new limit are fetched and turn active."""
        room = link.account_limit - (link.account_count - await self._count_throttled(link))
        after: str | None = None
        while room > 0:
            page = await self.ctx.worker.read(
                RelayStore.list_host_accounts, link.id, status="throttled", after=after, limit=500
            )
            for account in page[:room]:
                self.ctx.ingest.begin_backfill(link, account)
            room -= min(room, len(page))
            if len(page) < 500:
                break
            after = page[-1].did

    async def _count_throttled(self, link: HostLink) -> int:
        total = 0
        after: str | None = None
        while True:
            page = await self.ctx.worker.read(
                RelayStore.list_host_accounts, link.id, status="throttled", after=after, limit=500
            )
            total += len(page)
            if len(page) < 500:
                return total
            after = page[-1].did

    async def stop(self) -> None:
        # Reconnections first: one still running could connect an upstream the loop below has
        # already disconnected, leaving a subscriber that outlives the relay.
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links.values():
            if link.subscriber is not None:
                link.subscriber.stop()
        await asyncio.gather(
            *(self._disconnect(link) for link in self.links.values()), return_exceptions=True
        )
