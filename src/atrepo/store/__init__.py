"""Storage for the servers: repositories, records, accounts, tokens, blobs and the event log.

``base`` holds the synchronous protocols and frozen rows every backend
implements, ``sqlite`` the default backend, ``relay`` the relay's own store
(hosts, accounts seen, its event log), ``mirror`` the sync consumer's
mirror (records, repo states, Jetstream log) and ``worker`` the one writer
thread through which async code reaches a store. The store imports only the
core; services import the store.
"""

from __future__ import annotations

from .base import (
    ACCOUNT_STATUSES,
    Account,
    AccountStatus,
    BlobFiles,
    BlobRow,
    EventRow,
    Preference,
    RecordRow,
    RefreshToken,
    RepoHead,
    RepoTransaction,
    Rotation,
    SequencedEvent,
    Store,
)
from .mirror import (
    REPO_STATES,
    MirrorEvent,
    MirrorRecord,
    MirrorRepo,
    MirrorStore,
    RecordOp,
    ReplaceResult,
    open_mirror,
)
from .postgres import PostgresStore, open_host_store
from .relay import (
    HOST_STATUSES,
    LOCAL_STATUSES,
    HostRow,
    PendingEvent,
    PostgresRelayStore,
    RelayAccount,
    RelayStore,
    SQLiteRelayStore,
    open_relay_store,
)
from .sqlite import SQLiteStore
from .worker import StoreWorker

__all__ = [
    "ACCOUNT_STATUSES",
    "HOST_STATUSES",
    "LOCAL_STATUSES",
    "REPO_STATES",
    "Account",
    "AccountStatus",
    "BlobFiles",
    "BlobRow",
    "EventRow",
    "HostRow",
    "MirrorEvent",
    "MirrorRecord",
    "MirrorRepo",
    "MirrorStore",
    "PendingEvent",
    "PostgresRelayStore",
    "PostgresStore",
    "Preference",
    "RecordOp",
    "RecordRow",
    "RefreshToken",
    "RelayAccount",
    "RelayStore",
    "ReplaceResult",
    "RepoHead",
    "RepoTransaction",
    "Rotation",
    "SQLiteRelayStore",
    "SQLiteStore",
    "SequencedEvent",
    "Store",
    "StoreWorker",
    "open_host_store",
    "open_mirror",
    "open_relay_store",
]
