"""LogFollower and PostgresFile.listener against a real PostgreSQL server.

A writer's ``pg_notify`` inside a transaction reaches the follower at commit
(never for a rollback); a dropped listening connection is reopened and the
head read again; the poll catches what no notification announced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from atrepo.firehose.follow import LogFollower
from atrepo.store.mirror import open_mirror
from atrepo.store.pgfile import PostgresFile

pytestmark = pytest.mark.timeout(60)

CHANNEL = "atrepo_test_events"


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresFile]:
    opened = open_mirror(pg_url)
    assert isinstance(opened, PostgresFile)
    yield opened
    opened.close()


def _notify(url: str, payload: str, *, commit: bool = True) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        if commit:
            conn.commit()
        else:
            conn.rollback()


def test_listener_hears_committed_notifications_only(store: PostgresFile, pg_url: str) -> None:
    listener = store.listener(CHANNEL)
    try:
        assert listener.wait(0.05) == []
        _notify(pg_url, "7")
        _notify(pg_url, "8")
        _notify(pg_url, "9", commit=False)
        heard: list[str] = []
        for _ in range(20):
            heard += listener.wait(0.2)
            if len(heard) >= 2:
                break
        assert heard == ["7", "8"]
        assert listener.wait(0.1) == []  # the rolled-back one never arrives
    finally:
        listener.close()


def test_listener_refuses_odd_channel_names(store: PostgresFile) -> None:
    for bad in ("", "x; DROP TABLE t", "Upper", "a" * 64, "1abc"):
        with pytest.raises(ValueError):
            store.listener(bad)


async def _until(predicate: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_follower_notifies_heads_and_survives_a_dropped_connection(
    store: PostgresFile, pg_url: str
) -> None:
    head = {"seq": 3}
    seen: list[int] = []

    async def read_head() -> int:
        return head["seq"]

    follower = LogFollower(
        lambda: store.listener(CHANNEL), read_head, seen.append, name="test", poll_s=30, retry_s=0.1
    )
    follower.start()
    try:
        await _until(lambda: follower.listening)
        assert seen == [3]  # the head read once the listener was open
        await asyncio.to_thread(_notify, pg_url, "5")
        await _until(lambda: seen[-1] == 5)
        # A payload that is not a seq still means "something was committed": the head is read.
        head["seq"] = 6
        await asyncio.to_thread(_notify, pg_url, "hello")
        await _until(lambda: seen[-1] == 6)
        assert follower.notifications == 2

        # The server drops the listening connection: the follower reopens it and reads the head.
        head["seq"] = 11
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            )
        await _until(lambda: seen[-1] == 11)
        await _until(lambda: follower.listening)
        await asyncio.to_thread(_notify, pg_url, "12")
        await _until(lambda: seen[-1] == 12)
    finally:
        await follower.stop()
    assert not follower.listening


async def test_follower_polls_the_head(store: PostgresFile) -> None:
    head = {"seq": 1}
    seen: list[int] = []

    async def read_head() -> int:
        return head["seq"]

    follower = LogFollower(lambda: store.listener(CHANNEL), read_head, seen.append, name="poll", poll_s=0.1)
    follower.start()
    try:
        await _until(lambda: seen and seen[-1] == 1)
        head["seq"] = 4  # committed without a notification: the poll finds it
        await _until(lambda: seen[-1] == 4)
    finally:
        await follower.stop()
