"""The relay's status page (hosts, accounts, faults, resyncs, subscribers) at ``/`` and ``/status.json``.

An operator of today's relays learns that a host was dropped, or an account
stopped being relayed, from a user's complaint. This page shows it first:
every upstream host with its state, cursor, accounts against its limit,
events per minute and the reason for its last trouble; the accounts the
relay holds ``desynchronized`` (waiting for their repository to be fetched
again); the recent faults (what an upstream did wrong, by whom, for which
account) and the verification failures counted by the check that failed;
the resync queue; and what the fan-out knows of each downstream subscriber.

The machinery (escaping, the strict policy, negotiation, the refreshing
script, tables) is :mod:`atrepo.xrpc.status_page`; this module only lists the
relay's facts and collects them, each named one by one, never by dumping the
configuration: the admin password and any credentials in a configured URL
cannot appear (:func:`public_url`).

Everything here is read from memory (the host links, the ingest's fault ring
and counters, the resyncer, the fan-out) or from two cheap store reads (the
per-status account counts the metrics use, and the first desynchronized
accounts through the partial index of not-active accounts), so the page can
be polled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

import atrepo
from atrepo.store.relay import RelayStore
from atrepo.xrpc.status_page import Column, Fact, StatusPage, Table, add_status_routes, public_url

if TYPE_CHECKING:
    from .app import RelayContext

__all__ = ["RELAY_STATUS_PAGE", "RelayStatus", "add_routes"]

#: The answer to ``GET /`` for clients that do not ask for HTML (curl, SDKs).
ROOT_TEXT: Final = (
    "This is an AT Protocol relay (atrepo). Routes are under /xrpc/; the firehose is "
    "/xrpc/com.atproto.sync.subscribeRepos.\n"
    "Status: /status.json (or open / in a browser).\n"
)

#: Hosts listed on the page (``listHosts`` and ``/admin/hosts`` have them all).
MAX_HOSTS: Final = 500
#: Desynchronized accounts listed (the count is exact).
MAX_DESYNCHRONIZED: Final = 50
#: Recent faults listed, newest first (the ingest keeps a few more).
MAX_FAULTS: Final = 50
#: Downstream subscribers listed.
MAX_SUBSCRIBERS: Final = 200

RELAY_STATUS_PAGE: Final = StatusPage(
    title="atrepo relay",
    text=ROOT_TEXT,
    wide=True,
    sections=(
        (
            "Service",
            (
                Fact("Software", "software.name"),
                Fact("Version", "software.version"),
                Fact("Role", "service.role"),
                Fact("Store", "service.store"),
                Fact("PLC directory", "service.plcUrl"),
                Fact("Started", "service.startedAt"),
                Fact("Uptime", "service.uptimeSeconds", "duration"),
                Fact("Chain breaks", "service.mode"),
                Fact("Verification workers", "service.workers", "count"),
                Fact("Retention window", "service.retentionHours", unit="h"),
            ),
        ),
        (
            "Upstream hosts",
            (
                Fact("Hosts", "hosts.total", "count"),
                Fact("By status", "hosts.byStatus", "counts"),
                Table(
                    "hosts.list",
                    (
                        Column("Hostname", "hostname"),
                        Column("Status", "status"),
                        Column("Connected", "connected"),
                        Column("Cursor", "cursor", "count"),
                        Column("Accounts", "accounts", "count"),
                        Column("Limit", "accountLimit", "count"),
                        Column("Events/min", "eventsPerMinute", "count"),
                        Column("Last error", "lastError"),
                    ),
                    empty="no upstream hosts",
                ),
            ),
        ),
        (
            "Accounts",
            (
                Fact("Accounts", "accounts.total", "count"),
                Fact("By status", "accounts.byStatus", "counts"),
            ),
        ),
        (
            "Firehose",
            (
                Fact("Head seq", "events.headSeq", "count"),
                Fact("Queued for the sequencer", "events.queuedForSequencer", "count"),
                Fact("Events emitted since start", "events.emittedSinceStart", "count"),
                Fact("Transactions (batches) since start", "events.batches", "count"),
                Fact("Downstream subscribers", "subscribers.count", "count"),
                Table(
                    "subscribers.list",
                    (
                        Column("Last seq sent", "lastSeq", "count"),
                        Column("Behind head", "behind", "count"),
                        Column("Live", "live"),
                        Column("Unsent bytes", "buffered", "count"),
                    ),
                    empty="no subscribers",
                ),
            ),
        ),
        (
            "Desynchronized accounts",
            (
                Fact("Desynchronized", "desynchronized.count", "count"),
                Table(
                    "desynchronized.list",
                    (
                        Column("DID", "did"),
                        Column("Host", "host"),
                        Column("Relayed rev", "rev"),
                        Column("Since", "since"),
                    ),
                    empty="none: every account follows its host",
                ),
            ),
        ),
        (
            "Resyncs",
            (
                Fact("Queued", "resyncs.queued", "count"),
                Fact("Fetching now", "resyncs.active", "count"),
                Fact("Done since start", "resyncs.done", "count"),
                Fact("Failed attempts since start", "resyncs.failed", "count"),
            ),
        ),
        (
            "Faults",
            (
                Fact("Verification failures by check", "faults.verificationByCheck", "counts"),
                Fact("Faults by kind since start", "faults.byKind", "counts"),
                Table(
                    "faults.recent",
                    (
                        Column("Time", "time"),
                        Column("Kind", "kind"),
                        Column("Host", "host"),
                        Column("DID", "did"),
                        Column("Reason", "reason"),
                    ),
                    empty="no faults",
                ),
            ),
        ),
    ),
    links=(
        ("status.json", "/status.json"),
        ("metrics", "/metrics"),
        ("hosts", "/xrpc/com.atproto.sync.listHosts"),
    ),
)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class RelayStatus:
    """Collects the relay's status document; built with the app, so uptime counts from start-up."""

    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        self._started = time.monotonic()

    def hosts(self) -> dict[str, Any]:
        links = sorted(self.ctx.hosts.links.values(), key=lambda link: link.id)
        by_status: dict[str, int] = {}
        for link in links:
            by_status[link.status] = by_status.get(link.status, 0) + 1
        rows = []
        for link in links[:MAX_HOSTS]:
            row = link.to_json()
            rows.append(
                {
                    "hostname": row["hostname"],
                    "status": row["status"],
                    "connected": row["connected"],
                    "cursor": row["cursor"],
                    "accounts": row["accounts"],
                    "accountLimit": row["accountLimit"],
                    "eventsPerMinute": row["eventsPerMinute"],
                    "lastError": row["lastError"],
                    "lastEvent": _iso(row["lastEventMs"]),
                    "configured": row["configured"],
                }
            )
        return {"total": len(links), "byStatus": dict(sorted(by_status.items())), "list": rows}

    async def desynchronized(self, count: int) -> dict[str, Any]:
        ctx = self.ctx
        rows = await ctx.worker.read(
            RelayStore.list_accounts_by_status, "desynchronized", limit=MAX_DESYNCHRONIZED
        )
        listed = []
        for account in rows:
            link = ctx.hosts.links.get(account.host_id)
            listed.append(
                {
                    "did": account.did,
                    "host": link.key if link is not None else None,
                    "rev": account.rev,
                    "since": _iso(account.updated_ms),
                    "resyncing": ctx.ingest.resyncing(account.did),
                }
            )
        return {"count": count, "list": listed}

    def faults(self) -> dict[str, Any]:
        ingest = self.ctx.ingest
        counts = dict(sorted(ingest.fault_counts.items()))
        by_check = {
            kind.removeprefix("invalid-"): n for kind, n in counts.items() if kind.startswith("invalid-")
        }
        recent = [
            {"time": _iso(f.time_ms), "kind": f.kind, "host": f.host, "did": f.did, "reason": f.reason}
            for f in list(reversed(ingest.faults))[:MAX_FAULTS]
        ]
        return {
            "total": sum(counts.values()),
            "byKind": counts,
            "verificationByCheck": by_check,
            "recent": recent,
        }

    def subscribers(self) -> dict[str, Any]:
        fanout = self.ctx.fanout
        subs = fanout.subscribers
        head = fanout.tail
        listed = [
            {
                "lastSeq": sub.last,
                "behind": max(0, head - sub.last),
                "live": sub.live,
                "buffered": sub.buffered,
            }
            for sub in sorted(subs, key=lambda s: s.last)[:MAX_SUBSCRIBERS]
        ]
        return {"count": len(subs), "list": listed}

    async def collect(self) -> dict[str, Any]:
        """The document of ``/status.json`` (and of the page's first view)."""
        ctx = self.ctx
        config = ctx.config
        counts = await ctx.worker.read(RelayStore.count_accounts)
        total = counts.pop("total", sum(counts.values()))
        # An ingest process serves no firehose (its fan-out never starts): the head it shows is the
        # shared log's, which the sequencer writes, and beside it what waits for the sequencer.
        head = await ctx.worker.read(RelayStore.head_seq) if config.role == "ingest" else ctx.fanout.tail
        queued = await ctx.worker.read(RelayStore.pending_count)
        resyncer = ctx.resyncer
        return {
            "software": {"name": "atrepo", "version": atrepo.__version__, "role": "relay"},
            "service": {
                "role": config.role,
                "store": ctx.store.location,
                "plcUrl": public_url(config.plc_url),
                "startedAt": _iso(ctx.started_ms),
                "uptimeSeconds": int(time.monotonic() - self._started),
                "mode": "lenient (logged and relayed)"
                if config.lenient
                else "strict (account resynchronized)",
                "lenient": config.lenient,
                "workers": config.workers,
                "retentionHours": config.retention_hours,
            },
            "hosts": self.hosts(),
            "accounts": {"total": total, "byStatus": counts},
            "events": {
                "headSeq": head,
                "queuedForSequencer": queued,
                "emittedSinceStart": ctx.ingest.flushed_events,
                "batches": ctx.ingest.batches,
            },
            "desynchronized": await self.desynchronized(counts.get("desynchronized", 0)),
            "resyncs": {
                "queued": resyncer.queued,
                "active": len(resyncer.active),
                "done": resyncer.done,
                "failed": resyncer.failed,
            },
            "faults": self.faults(),
            "subscribers": self.subscribers(),
        }


def add_routes(app: web.Application, ctx: RelayContext) -> RelayStatus:
    """Mount ``/``, ``/status.json`` and the page's assets on the relay's app; return the collector."""
    status = RelayStatus(ctx)
    add_status_routes(app, RELAY_STATUS_PAGE, status.collect)
    return status
