"""``com.atproto.sync.subscribeRepos`` on an :class:`~atrepo.xrpc.server.XrpcRouter`.

The router does the generic part (the upgrade, the ``cursor`` parameter checked
against the lexicon, an error frame and a 1008 close for anything raised);
this module wires one :class:`~atrepo.firehose.outbox.Outbox` per connection
to the shared :class:`~atrepo.firehose.fanout.Fanout` and registers the
firehose metrics in the router's registry, so ``/metrics`` shows them beside
the request metrics.

Wiring, in the host::

    fanout = Fanout(worker)
    mount_subscribe_repos(router, store, worker, fanout)
    app.on_startup.append(lambda _: fanout.start())
    app.on_shutdown.append(lambda _: fanout.close())   # subscribers get 1012
    ...
    with store.transaction(did) as tx: ...              # on the worker
    fanout.notify(tx.events[-1].seq)                    # after the commit, from async code
"""

from __future__ import annotations

from typing import Final, TypeVar

from atrepo.store.base import EventLog
from atrepo.store.worker import StoreWorker
from atrepo.xrpc.server import SubscriptionContext, XrpcRouter

from .fanout import DEFAULT_PAGE, Fanout
from .outbox import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_QUEUE, FirehoseMetrics, Outbox

__all__ = ["DEFAULT_HEARTBEAT", "SUBSCRIBE_REPOS", "mount_subscribe_repos"]

SUBSCRIBE_REPOS: Final = "com.atproto.sync.subscribeRepos"
#: Seconds between WebSocket pings: idle connections through proxies stay open, dead ones are noticed.
DEFAULT_HEARTBEAT: Final = 30.0

S = TypeVar("S", bound=EventLog)


def mount_subscribe_repos(
    router: XrpcRouter,
    store: S,
    worker: StoreWorker[S],
    fanout: Fanout[S],
    *,
    max_queue: int = DEFAULT_MAX_QUEUE,
    page: int = DEFAULT_PAGE,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
) -> FirehoseMetrics:
    """Serve ``subscribeRepos`` from ``fanout``; return the metrics it registered on ``router.metrics``.

    ``max_queue``: events a live subscriber may fall behind before
    ``ConsumerTooSlow`` (at most the fan-out's window). ``page``: events per
    backfill query. ``close_timeout``: how long a close may take before the
    connection is aborted. Reads go through ``worker`` (reader threads);
    ``store`` must be the worker's store.
    """
    if store is not worker.store or fanout.worker is not worker:
        raise ValueError("store, worker and fan-out must belong together")
    if not 1 <= max_queue <= fanout.window:
        raise ValueError(f"max_queue must be between 1 and the fan-out window ({fanout.window})")
    if page < 1:
        raise ValueError("page must be at least 1")
    metrics = FirehoseMetrics.register(router.metrics, fanout=fanout)

    async def subscribe_repos(ctx: SubscriptionContext) -> None:
        transport = ctx.request.transport
        outbox = Outbox(
            fanout,
            ctx.ws,
            max_queue=max_queue,
            page=page,
            close_timeout=close_timeout,
            abort=transport.abort if transport is not None else None,
            metrics=metrics,
            request=ctx.request,
        )
        await outbox.run(ctx.params.get("cursor"))

    router.add(SUBSCRIBE_REPOS, subscribe_repos, heartbeat=heartbeat)
    return metrics
