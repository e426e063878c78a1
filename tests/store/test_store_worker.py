"""The writer thread: results and errors come back to asyncio, writers to many repos interleave safely."""

from __future__ import annotations

import asyncio
import threading

import pytest
from store_support import POST, check_repo, commit, create, new_account, open_repo

from atrepo.core.cid import CID
from atrepo.core.errors import LimitExceeded, OutOfSync, WriteAborted
from atrepo.core.keys import PrivateKey
from atrepo.store.base import Store
from atrepo.store.sqlite import SQLiteStore
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


async def test_a_caller_cancelled_while_its_job_runs_leaves_it_to_finish(store: Store) -> None:
    """The job runs on (its writes commit); only its result goes unseen, and the worker carries on."""
    worker = StoreWorker(store)
    started, release = threading.Event(), threading.Event()
    try:
        did, key = await worker.run(new_account)

        def slow_write(s: Store) -> int:
            started.set()
            release.wait(10)
            return commit(s, did, key, [create("slow")])[1].seq

        running = asyncio.ensure_future(worker.run(slow_write))
        while not started.is_set():
            await asyncio.sleep(0.005)
        running.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await running
        await worker.run(lambda _s: None)  # after the slow job: it has finished
        assert await worker.read(lambda s: s.get_record(did, POST, "slow")) is not None
        assert worker.pending == 0
        with pytest.raises(OutOfSync):  # errors still come back after a cancelled caller
            await worker.run(lambda _s: (_ for _ in ()).throw(OutOfSync("boom")))
    finally:
        release.set()
        await worker.close()


async def test_submit_serves_callers_on_other_threads(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        did, _ = await worker.run(new_account)
        loop = asyncio.get_running_loop()
        future = worker.submit(lambda s: s.get_account(did))
        account = await loop.run_in_executor(None, future.result, 10)
        assert account is not None and account.did == did
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, worker.submit(lambda _s: 1 // 0).result, 10)
    finally:
        await worker.close()


def test_worker_settings_are_checked(store: Store) -> None:
    with pytest.raises(ValueError):
        StoreWorker(store, max_pending=0)


# --- group commit: writes queued behind a running one share its transaction ---------------


def _rkeys(records: dict[str, object]) -> set[str]:
    return {path.rsplit("/", 1)[1] for path in records}


async def _queued_behind_a_blocker(worker: StoreWorker[Store], jobs: list) -> list:  # type: ignore[type-arg]
    """Hold the writer with one job, queue ``jobs`` behind it, release: they run as one group."""
    release, running = threading.Event(), threading.Event()

    def block(_store: object) -> bool:
        running.set()
        return release.wait(10)

    blocker = asyncio.ensure_future(worker.run(block))
    # Running before the jobs are queued: a writer thread that woke late would otherwise take the
    # blocker and the jobs in one group, counted before ``groups`` is read below.
    assert await asyncio.to_thread(running.wait, 10)
    futures = [asyncio.ensure_future(worker.run(fn, *args)) for fn, *args in jobs]
    await asyncio.sleep(0.02)
    groups = worker.groups
    release.set()
    await blocker
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert worker.groups == groups + 1, "the queued jobs did not run as one group"
    return results


async def test_queued_writes_commit_together_and_all_land(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        accounts = [await worker.run(new_account) for _ in range(3)]
        jobs = [(commit, did, key, [create(f"g{i}")]) for i in range(4) for did, key in accounts]
        results = await _queued_behind_a_blocker(worker, jobs)
        seqs = [row.seq for _result, row in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(jobs)
        assert worker.grouped_jobs >= len(jobs)
        for did, key in accounts:
            assert _rkeys(await worker.read(check_repo, did, key)) == {f"g{i}" for i in range(4)}
    finally:
        await worker.close()


async def test_a_failing_job_in_a_group_is_rolled_back_alone(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        (did, key), (other, other_key) = [await worker.run(new_account) for _ in range(2)]

        def half_then_fail(s: Store) -> None:
            commit(s, did, key, [create("half")])  # its own transaction: kept
            with s.transaction(did) as tx:  # this one fails after writing: rolled back alone
                tx.apply_commit(tx.open_repo().apply_writes([create("never")], key))
                raise OutOfSync("boom")

        results = await _queued_behind_a_blocker(
            worker,
            [
                (commit, other, other_key, [create("before")]),
                (half_then_fail,),
                (commit, did, key, [create("after")]),
            ],
        )
        assert isinstance(results[1], OutOfSync)
        assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
        rows = await worker.read(lambda s: s.read_events(0, 1000))
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # no hole left by the failed job
        assert _rkeys(await worker.read(check_repo, did, key)) == {"half", "after"}
        assert _rkeys(await worker.read(check_repo, other, other_key)) == {"before"}
    finally:
        await worker.close()


async def test_a_lost_group_transaction_fails_the_jobs_before_it_and_reruns_the_rest(store: Store) -> None:
    """An error that ends the whole transaction (as SQLite does on I/O errors) loses the group's writes."""
    worker = StoreWorker(store)
    try:
        did, key = await worker.run(new_account)
        head = await worker.read(lambda s: s.head_seq())

        def lose_the_transaction(s: Store) -> None:
            s._writer.execute("ROLLBACK")  # type: ignore[attr-defined]
            raise OSError("disk I/O error")

        results = await _queued_behind_a_blocker(
            worker,
            [
                (commit, did, key, [create("lost")]),
                (lose_the_transaction,),
                (commit, did, key, [create("rerun")]),
            ],
        )
        assert isinstance(results[0], WriteAborted)
        assert isinstance(results[1], OSError)
        _result, row = results[2]
        assert row.seq == head + 1  # the lost write's seq was never handed out
        assert _rkeys(await worker.read(check_repo, did, key)) == {"rerun"}
    finally:
        await worker.close()


async def test_a_single_client_is_never_grouped(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        did, key = await worker.run(new_account)
        for i in range(5):
            await worker.run(commit, did, key, [create(f"s{i}")])
        assert worker.groups == 0
    finally:
        await worker.close()


async def test_pruning_blobs_inside_a_group_deletes_their_files_after_the_commit(store: Store) -> None:
    """A job deleting blob files in a group defers them: it must not wait on the group's own lock."""
    worker = StoreWorker(store)
    try:
        did, key = await worker.run(new_account)

        def upload(s: Store) -> CID:
            cid, size = s.blob_files.write([b"an upload nobody names"])
            with s.transaction(did) as tx:
                tx.add_blob(cid, "text/plain", size)
            return cid

        cid = await worker.run(upload)
        far_future = 2**62
        results = await _queued_behind_a_blocker(
            worker, [(commit, did, key, [create("beside")]), (SQLiteStore.prune_temporary_blobs, far_future)]
        )
        assert results[1] == 1
        assert not store.blob_files.exists(cid)
        assert _rkeys(await worker.read(check_repo, did, key)) == {"beside"}
    finally:
        await worker.close()


async def test_several_writer_threads_run_jobs_side_by_side(store: Store) -> None:
    """``writers=N`` (a host on PostgreSQL): N jobs run at once, each repository's writes stay whole."""
    if type(store) is SQLiteStore:
        pytest.skip("one SQLite file has one writer connection: several writer threads are for PostgreSQL")
    worker = StoreWorker(store, writers=3, group_max=1, max_pending=64)
    try:
        barrier = threading.Barrier(3, timeout=20)
        names = await asyncio.gather(
            *(worker.run(lambda _s: (barrier.wait(), threading.current_thread().name)[1]) for _ in range(3))
        )
        assert len(set(names)) == 3  # three jobs were running at the same moment, on three threads
        accounts = [await worker.run(new_account) for _ in range(3)]

        async def writer(did: str, key: PrivateKey) -> None:
            for i in range(8):
                await worker.run(commit, did, key, [create(f"r{i:02d}")])

        await asyncio.gather(*(writer(did, key) for did, key in accounts))
        rows = await worker.read(lambda s: s.read_events(0, 1000))
        assert [r.seq for r in rows] == list(range(1, 12 + 24 + 1))  # one gapless log
        for did, key in accounts:
            assert len(await worker.read(check_repo, did, key)) == 8
    finally:
        await worker.close()
    assert worker.closed


async def test_a_lost_database_connection_is_typed_as_store_unavailable() -> None:
    import psycopg

    from atrepo.core.errors import StoreUnavailable
    from atrepo.store.worker import StoreWorker

    lost = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    locked = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    shutdown = psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    def fail(_store: object, exc: Exception) -> None:
        raise exc

    worker: StoreWorker[object] = StoreWorker(object(), inline=True)
    try:
        for exc in (lost, shutdown):
            for call in (worker.run, worker.read, worker.run_short):
                with pytest.raises(StoreUnavailable, match="the database connection failed") as raised:
                    await call(fail, exc)
                assert raised.value.__cause__ is exc
        # not an outage: the driver's error as it was, and anything else untouched
        for other in (locked, ValueError("x")):
            for call in (worker.run, worker.read, worker.run_short):
                with pytest.raises(type(other)):
                    await call(fail, other)
    finally:
        await worker.close()


async def test_a_short_job_runs_on_the_caller_when_the_writer_is_idle(store: Store) -> None:
    """``run_short`` skips the thread hand-over only when no job is queued, running or unanswered."""
    here = threading.current_thread().name
    worker = StoreWorker(store, inline=True)
    try:
        did, key = await worker.run(new_account)

        def where(s: Store) -> tuple[str, int]:
            return threading.current_thread().name, worker.pending

        assert await worker.run_short(where) == (here, 1)  # counted while it runs
        assert worker.pending == 0
        result, row = await worker.run_short(commit, did, key, [create("a")])
        assert row.seq == 5 and await worker.read(lambda s: s.get_record(did, POST, "a")) is not None
        with pytest.raises(OutOfSync):  # errors come back as raised

            def stale(s: Store) -> None:
                with s.transaction(did) as tx:
                    tx.apply_commit(result)

            await worker.run_short(stale)
        # the writer busy: a short job queues behind it, on the writer thread, in order
        release = threading.Event()
        blocked = asyncio.ensure_future(worker.run(lambda s: release.wait(5)))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(worker.run_short(where))
        await asyncio.sleep(0.05)
        assert not queued.done()
        release.set()
        assert await blocked is True
        name, _ = await queued
        assert name.endswith("-writer")
    finally:
        await worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        await worker.run_short(lambda s: None)


async def test_a_short_job_queues_while_another_caller_waits_to_hear_back(store: Store) -> None:
    """A finished job whose caller has not resumed yet still counts: under load the queue keeps its order."""
    import time

    worker = StoreWorker(store, inline=True)
    try:
        first = asyncio.ensure_future(worker.run(lambda s: "first"))
        await asyncio.sleep(0)  # queued; the writer runs it
        deadline = time.monotonic() + 5
        while worker.pending and time.monotonic() < deadline:  # not yielding: its caller cannot resume
            time.sleep(0.001)
        assert worker.pending == 0 and not first.done()
        name = await worker.run_short(lambda s: threading.current_thread().name)
        assert name.endswith("-writer") and first.done()
        assert await first == "first"
    finally:
        await worker.close()


async def test_without_inline_a_short_job_always_takes_the_writer_thread(store: Store) -> None:
    worker = StoreWorker(store)
    try:
        name = await worker.run_short(lambda s: threading.current_thread().name)
        assert name.endswith("-writer")
    finally:
        await worker.close()
