"""Fan-out processes (``atrepo relay --role fanout``) serving a PostgreSQL relay's firehose.

One relay ingests (in this process) into a fresh PostgreSQL database; one
``atrepo relay --role fanout --database URL`` subprocess follows the same
event log. A verifying subscriber on each must receive every event with the
same seq and the same bytes. The fan-out process is killed with SIGKILL in
the middle of the stream and started again on the same port: its subscriber
reconnects with its cursor and resumes with no gap and no duplicate. The
command refuses ``--role fanout`` without a PostgreSQL ``--database``, and a
fan-out process whose connections the server dropped listens again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import aiohttp
import pytest
from relay_support import Net, Watcher, free_port, metric, spawn_relay, stop_all, until
from typer.testing import CliRunner

from atrepo.cli.app import build_app
from atrepo.core.events import IdentityEvent, encode_frame
from atrepo.relay import RelayConfig, start_fanout, start_relay
from atrepo.relay.app import RunningRelay
from atrepo.store.relay import PendingEvent, PostgresRelayStore

pytestmark = pytest.mark.timeout(120)


async def test_a_fanout_process_serves_the_same_firehose_and_survives_kill_9(
    tmp_path: Path, http: aiohttp.ClientSession, pg_url: str
) -> None:
    net = Net(tmp_path, http)
    relay: RunningRelay | None = None
    procs: list[asyncio.subprocess.Process] = []
    watchers: list[Watcher] = []
    try:
        node = await net.add_node("one")
        relay = await start_relay(
            RelayConfig(
                port=0,
                data_dir=tmp_path / "relay",
                plc_url=net.plc_url,
                upstreams=(node.proxy.url,),
                synchronous="NORMAL",
                database=pg_url,
            )
        )
        await until(lambda: node.proxy.connected > 0, "the relay subscribed")
        accounts = [await net.create_account(node, f"user{i}.test") for i in range(3)]
        await net.write(accounts[0], 2)  # in the log before the fan-out starts: served by backfill
        port = free_port()
        fan_url = f"http://127.0.0.1:{port}"
        args = [
            "--role",
            "fanout",
            "--database",
            pg_url,
            "--port",
            str(port),
            "--data",
            str(tmp_path / "fan"),
        ]
        procs.append(await spawn_relay(args, tmp_path / "fanout.log"))
        direct = Watcher(relay.url, net.plc_url, http)
        via = Watcher(fan_url, net.plc_url, http)
        watchers += [direct, via]
        direct.start()
        via.start()

        async def keep_writing() -> None:
            for _round in range(10):
                await asyncio.gather(*(net.write(a, 1) for a in accounts))

        writing = asyncio.get_running_loop().create_task(keep_writing())
        await until(lambda: len(via.events) >= 15, "the fan-out process streaming")
        victim = procs[-1]
        victim.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(victim.wait(), 10) == -signal.SIGKILL
        before = via.last
        procs.append(await spawn_relay(args, tmp_path / "fanout.log"))
        await asyncio.wait_for(writing, 60)

        def at_head() -> bool:
            head = relay.context.fanout.tail if relay is not None else 0
            return head > 0 and direct.last >= head and via.last >= head

        await until(at_head, "both subscribers at the relay's head", 30)
        assert via.subscriber.stats.connects >= 2  # it did reconnect to the restarted process
        assert 0 < before < via.last
        for watcher in watchers:
            assert watcher.problems == [], watcher.problems
            assert sorted(watcher.seqs) == list(range(1, len(watcher.seqs) + 1))  # no gap, no duplicate
        assert via.raws == direct.raws  # the same events, the same seqs, the same bytes
        assert len(via.raws) >= 3 + 2 + 30  # accounts' events, the early writes, every round
        missing = [w for w in net.writes if not via.accounted(w)]
        assert missing == [], missing[:5]

        for url in (fan_url, relay.url):  # both answer for their database
            async with http.get(f"{url}/xrpc/_health") as resp:
                assert resp.status == 200, await resp.text()
        async with http.get(f"{fan_url}/metrics") as resp:
            text = await resp.text()
        assert metric(text, "atrepo_relay_head_seq") == relay.context.fanout.tail
        assert metric(text, "atrepo_relay_subscribers") == 1
    finally:
        await stop_all(watchers, procs)
        if relay is not None:
            await relay.stop()
        await net.close()


def test_relay_command_refusals(tmp_path: Path) -> None:
    """``--role fanout`` needs a PostgreSQL ``--database``; an unreachable server is one line, exit 1,
    the password hidden."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # the command configures logging: put it back
    try:
        runner = CliRunner()
        app = build_app()
        result = runner.invoke(
            app, ["relay", "--role", "fanout", "--data", str(tmp_path)], env={"ATREPO_DATABASE": None}
        )
        assert result.exit_code == 2 and "PostgreSQL" in result.output, result.output
        result = runner.invoke(app, ["relay", "--role", "ingest", "--data", str(tmp_path)])
        assert result.exit_code == 2 and "--role" in result.output, result.output
        result = runner.invoke(app, ["relay", "--database", str(tmp_path / "x.sqlite")])
        assert result.exit_code == 2 and "postgresql://" in result.output, result.output
        closed = free_port()  # nothing listens there
        url = f"postgresql://relay:s3cret@127.0.0.1:{closed}/atrepo?connect_timeout=2"
        for role in ("all", "fanout"):
            args = ["relay", "--role", role, "--port", "0", "--data", str(tmp_path / "d"), "--database", url]
            result = runner.invoke(app, args)
            assert result.exit_code == 1, result.output
            assert "cannot connect" in result.output and "relay:***@" in result.output, result.output
            assert "s3cret" not in result.output
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


async def test_a_fanout_process_listens_again_after_losing_its_connections(
    tmp_path: Path, http: aiohttp.ClientSession, pg_url: str
) -> None:
    """The server drops every connection (a restart, an admin): the fan-out listens again and
    follows the next batches; its health check answers again."""
    import psycopg

    writer = PostgresRelayStore(pg_url)
    running = await start_fanout(RelayConfig(port=0, data_dir=tmp_path, database=pg_url, role="fanout"))
    try:
        await until(lambda: running.listening, "the fan-out listening")
        await asyncio.to_thread(writer.apply_batch, [], [_identity("did:plc:a") for _ in range(3)])
        await until(lambda: running.fanout.tail == 3 and running.notifications >= 1, "the first batch")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        heard = running.notifications
        await until(lambda: not running.listening, "the fan-out noticing its connection lost")
        await asyncio.to_thread(writer.apply_batch, [], [_identity("did:plc:a")])  # the writer reconnects

        async def follows() -> bool:  # each later batch is heard (after the listener is back)
            await asyncio.to_thread(writer.apply_batch, [], [_identity("did:plc:b")])
            head = writer.head_seq()
            # This batch's notification and read take a moment (longer on a loaded machine): checking
            # at once, before writing the next batch, would chase a head that moves on every check.
            for _ in range(40):
                if running.notifications > heard and running.fanout.tail == head:
                    return True
                await asyncio.sleep(0.05)
            return False

        await until(follows, "the fan-out following again", 15)
        async with http.get(f"{running.url}/xrpc/_health") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await running.stop()
        writer.close()


def _identity(did: str) -> PendingEvent:
    def encode(seq: int) -> bytes:
        return encode_frame(IdentityEvent(seq=seq, did=did, time="2026-12-02T00:00:00.000Z"))

    return PendingEvent(did, "#identity", 1_800_000_000_000, encode)
