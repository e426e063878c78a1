"""The firehose, served: ``subscribeRepos`` from the host's event log (sync.md §3-6).

:class:`Fanout` reads each new event once and shares its frame bytes (the
whole WebSocket frame, ``wire.py``) with every subscriber; :class:`Outbox`
serves one connection (cursor rules, backfill, cutover, live,
``ConsumerTooSlow``); :func:`mount_subscribe_repos` declares the route on an
XRPC router. Imports only ``core``, ``store`` and ``xrpc``.
"""

from __future__ import annotations

from .endpoint import DEFAULT_HEARTBEAT, SUBSCRIBE_REPOS, mount_subscribe_repos
from .fanout import DEFAULT_PAGE, DEFAULT_SHARED_PAGES, DEFAULT_WINDOW, Fanout, Frames, Subscriber
from .outbox import BATCH_BYTES, DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_QUEUE, FirehoseMetrics, Outbox

__all__ = [
    "BATCH_BYTES",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PAGE",
    "DEFAULT_SHARED_PAGES",
    "DEFAULT_WINDOW",
    "SUBSCRIBE_REPOS",
    "Fanout",
    "FirehoseMetrics",
    "Frames",
    "Outbox",
    "Subscriber",
    "mount_subscribe_repos",
]
