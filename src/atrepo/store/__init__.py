"""Storage for the servers: repositories, records, accounts, tokens, blobs and the event log.

``base`` holds the synchronous protocols and frozen rows every backend
implements, ``sqlite`` the default backend and ``worker`` the one writer
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
from .sqlite import SQLiteStore
from .worker import StoreWorker

__all__ = [
    "ACCOUNT_STATUSES",
    "Account",
    "AccountStatus",
    "BlobFiles",
    "BlobRow",
    "EventRow",
    "Preference",
    "RecordRow",
    "RefreshToken",
    "RepoHead",
    "RepoTransaction",
    "Rotation",
    "SQLiteStore",
    "SequencedEvent",
    "Store",
    "StoreWorker",
]
