"""The relay's settings: every one has a default, so ``atrepo relay`` runs with none."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_PORT", "ROLES", "SHARED_ROLES", "RelayConfig", "host_partition"]

DEFAULT_PORT: Final = 2470
#: What ``atrepo relay --role`` may run.
ROLES: Final = ("all", "ingest", "sequencer", "fanout")
#: Roles that share a PostgreSQL store with other processes (refused without ``--database``).
SHARED_ROLES: Final = ("ingest", "sequencer", "fanout")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """What ``atrepo relay`` was asked to do.

    * ``upstreams``: hosts to subscribe to from the start (``--upstream``,
      loopback allowed; trusted, so neither the SSRF guard nor the crawl
      limits apply to them).
    * ``lenient``: log chain breaks and relay the commit anyway (as the
      reference relay does today) instead of desynchronizing the account;
      invalid events are still dropped.
    * ``workers``: verification processes (0: verify in the relay's process).
    * ``retention_hours``: how far back ``subscribeRepos`` can replay.
    * ``default_account_limit``: accounts a crawled host may bring before new
      ones are kept ``throttled`` (the reference's 100);
      ``trusted_account_limit`` for configured hosts.
    * ``new_hosts_per_day``: ``requestCrawl`` additions per 24 h.
    * ``crawl_allow_private``: let ``requestCrawl`` reach private and
      loopback addresses (development only).
    * ``database``: a ``postgresql://`` URL to keep the store in (schema
      ``atrepo_relay``) instead of SQLite in ``data_dir`` (``--database``).
    * ``role``: ``all`` (ingest, sequence and serve: one relay process),
      ``ingest`` (subscribe to and verify the upstream hosts of one
      ``partition``, queueing their events for the sequencer), ``sequencer``
      (give queued events their seqs, serve ``subscribeRepos``) or
      ``fanout`` (serve ``subscribeRepos`` from a PostgreSQL relay's shared
      event log, ingesting nothing); see :mod:`atrepo.relay.follower`. Every
      role but ``all`` needs a PostgreSQL ``database``.
    * ``partition``: ``(i, n)`` for ``--role ingest``: this process takes
      the hosts whose name hashes to ``i`` of ``n`` (:func:`host_partition`).
    * ``hosts_refresh_s``: how often an ingest process reads the hosts table
      again for hosts of its partition added elsewhere (``requestCrawl`` on
      the sequencer).
    * ``replay_upstreams``: a configured upstream seen for the first time is
      read from the start of its retained window (cursor 0) instead of being
      seeded from ``listRepos`` and followed from its live head: its history
      is verified event by event (benchmarks, and hosts whose window covers
      their whole history).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("relay-data")
    plc_url: str = "https://plc.directory"
    upstreams: tuple[str, ...] = ()
    admin_password: str | None = None
    lenient: bool = False
    workers: int = 0
    retention_hours: float = 72.0
    default_account_limit: int = 100
    trusted_account_limit: int = 10_000_000
    new_hosts_per_day: int = 50
    crawl_allow_private: bool = False
    replay_upstreams: bool = False
    lanes: int = 64
    max_in_flight: int = 1024
    resync_concurrency: int = 4
    synchronous: str = "FULL"
    log_format: str = "text"
    database: str | None = None
    role: str = "all"
    partition: tuple[int, int] | None = None
    hosts_refresh_s: float = 5.0


def host_partition(hostname: str, count: int) -> int:
    """The ingest partition of an upstream host (stable across runs and machines: crc32, not ``hash``)."""
    return zlib.crc32(hostname.lower().encode()) % count
