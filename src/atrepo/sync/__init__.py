"""``atrepo sync``: follow a relay or host, verify everything, and keep a SQL mirror of chosen repositories.

See :mod:`atrepo.sync.engine` for the per-repository state machine (backfill,
live apply, resync with deletes) and :mod:`atrepo.sync.app` for the running
service (status page, metrics, the hook for more outputs); ``docs/sync.md``
for operating it.
"""

from .app import RouteHook, RunningSync, start_sync
from .engine import CollectionFilter, SyncConfig, SyncEngine

__all__ = ["CollectionFilter", "RouteHook", "RunningSync", "SyncConfig", "SyncEngine", "start_sync"]
