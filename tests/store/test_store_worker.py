"""The writer thread: results and errors come back to asyncio, writers to many repos interleave safely."""

from __future__ import annotations

import asyncio
import threading

import pytest
from store_support import POST, check_repo, commit, create, new_account, open_repo

from atrepo.core.errors import LimitExceeded, OutOfSync
from atrepo.core.keys import PrivateKey
from atrepo.store.base import Store
from atrepo.store.worker import StoreWorker


async def test_results_and_exceptions_come_back(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        did, key = await worker.run(new_account, writes=[create("a")])
        result, row = await worker.run(commit, did, key, [create("b")])
        assert row.seq == 5 and result.commit.did == did
        thread = await worker.run(lambda _store: threading.current_thread().name)
        assert thread.endswith("-writer") and thread != threading.current_thread().name
        stale = (await worker.read(open_repo, did)).apply_writes([create("c")], key)
        await worker.run(commit, did, key, [create("d")])

        def apply(s: Store) -> None:
            with s.transaction(did) as tx:
                tx.apply_commit(stale)

        with pytest.raises(OutOfSync):
            await worker.run(apply)
        assert await worker.read(lambda s: s.get_record(did, POST, "d")) is not None
    finally:
        await worker.close()


async def test_concurrent_writers_to_different_repos(store: Store) -> None:
    worker = StoreWorker(store, max_pending=64)
    try:
        accounts = [await worker.run(new_account) for _ in range(4)]

        async def writer(did: str, key: PrivateKey) -> list[int]:
            seqs = []
            for i in range(12):
                _, row = await worker.run(commit, did, key, [create(f"r{i:02d}")])
                seqs.append(row.seq)
            return seqs

        per_repo = await asyncio.gather(*(writer(did, key) for did, key in accounts))
        await worker.run(lambda s: None)
        for seqs in per_repo:
            assert seqs == sorted(seqs)
        everything = sorted(s for seqs in per_repo for s in seqs)
        assert len(set(everything)) == 48
        rows = await worker.read(lambda s: s.read_events(0, 1000))
        assert [r.seq for r in rows] == list(range(1, 16 + 48 + 1))
        for did, key in accounts:
            records = await worker.read(check_repo, did, key)
            assert sorted(records) == [f"{POST}/r{i:02d}" for i in range(12)]
    finally:
        await worker.close()


async def test_a_full_queue_is_refused_at_once(store: Store) -> None:
    worker = StoreWorker(store, max_pending=2)
    release = threading.Event()
    started = threading.Event()

    def block(_store: Store) -> str:
        started.set()
        release.wait(10)
        return "done"

    try:
        first = asyncio.ensure_future(worker.run(block))
        second = asyncio.ensure_future(worker.run(lambda _s: "queued"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        assert worker.pending == 2
        with pytest.raises(LimitExceeded, match="STORE_MAX_PENDING"):
            await worker.run(lambda _s: "refused")
        release.set()
        assert await first == "done" and await second == "queued"
        assert await worker.run(lambda _s: "accepted again") == "accepted again"
    finally:
        release.set()
        await worker.close()


async def test_close_finishes_queued_work(store: Store) -> None:
    worker = StoreWorker(store)
    release = threading.Event()
    done: list[int] = []

    def job(_store: Store, n: int) -> int:
        release.wait(10)
        done.append(n)
        return n

    futures = [worker.submit(job, n) for n in range(5)]
    closing = asyncio.ensure_future(worker.close())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        await worker.run(job, 99)
    release.set()
    await closing
    assert done == [0, 1, 2, 3, 4] and [f.result() for f in futures] == done
    assert worker.closed
    await worker.close()  # twice is fine


async def test_a_cancelled_caller_takes_its_queued_job_along(store: Store) -> None:
    worker = StoreWorker(store)
    release = threading.Event()
    ran: list[str] = []
    try:
        blocker = asyncio.ensure_future(worker.run(lambda _s: release.wait(10)))
        queued = asyncio.ensure_future(worker.run(lambda _s: ran.append("queued")))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued  # the cancellation has reached the queued job
        release.set()
        await blocker
        await worker.run(lambda _s: None)
        assert ran == [] and worker.pending == 0
    finally:
        release.set()
        await worker.close()


def test_worker_settings_are_checked(store: Store) -> None:
    with pytest.raises(ValueError):
        StoreWorker(store, max_pending=0)
