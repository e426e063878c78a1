"""Firehose frames: ``decode_frame``, then the Sync 1.1 checks with no key."""

from __future__ import annotations

from atrepo.core import events, validate

from .harness import guarded

#: A fixed clock, so a rev's future-time check does not depend on the day.
NOW = 1_800_000_000.0


def test_one_input(data: bytes) -> None:
    frame = guarded(lambda: events.decode_frame(data))
    if isinstance(frame, events.CommitEvent):
        guarded(lambda: validate.validate_commit(frame, None, now=NOW))
    elif isinstance(frame, events.SyncEvent):
        guarded(lambda: validate.validate_sync(frame, None, now=NOW))
