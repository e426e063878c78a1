"""The relay split over processes: ``--role ingest`` (per partition), ``sequencer`` and ``fanout``.

Two upstream hosts (behind fault proxies, on ports chosen so that their names
hash to different partitions) feed two ingest subprocesses (partitions 0/2
and 1/2), which verify and queue; one sequencer subprocess gives the queued
events their seqs and serves ``subscribeRepos``; a fan-out subprocess serves
the same log. A verifying subscriber on the sequencer and one on the fan-out
must each receive every write exactly once, seqs 1..n with no gap, every
account's commits chaining, the same bytes on both. Meanwhile one ingest
process and then the sequencer are killed with SIGKILL and started again:
nothing is lost or duplicated (an ingest's queued rows and its host cursor
are one transaction; so are the sequencer's seqs, log rows and queue
deletions). Then ``requestCrawl`` on a sequencer reaches the ingest process
of the new host's partition, and the command refuses what it cannot run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from relay_support import Net, Node, Watcher, free_port, metric, spawn_relay, stop_all, until
from typer.testing import CliRunner
from upstream_proxy import UpstreamProxy, bind_local

from atrepo.cli.app import build_app
from atrepo.relay import RelayConfig, start_fanout, start_relay
from atrepo.relay.config import host_partition

pytestmark = pytest.mark.timeout(150)


def _socket_in_partition(index: int, count: int) -> socket.socket:
    """A listening loopback socket whose ``127.0.0.1:port`` name hashes to partition ``index``."""
    held: list[socket.socket] = []
    try:
        while True:
            sock = bind_local()
            if host_partition(f"127.0.0.1:{sock.getsockname()[1]}", count) == index:
                return sock
            held.append(sock)  # kept open meanwhile, so the next bind gets another port
    finally:
        for other in held:
            other.close()


async def _add_node(net: Net, name: str, partition: int, count: int) -> Node:
    """``Net.add_node`` with the proxy (the host's name for the relay) in a chosen partition."""
    proxy = UpstreamProxy(_socket_in_partition(partition, count))
    node = Node(name, net.root / name, proxy, net.plc_url if net.nodes else None)
    await node.start()
    await proxy.start(node.url)
    net.nodes.append(node)
    return node


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL


async def test_ingest_partitions_and_a_sequencer_relay_every_event_once_through_kill_9(
    tmp_path: Path, http: aiohttp.ClientSession, pg_url: str
) -> None:
    net = Net(tmp_path, http)
    procs: dict[str, asyncio.subprocess.Process] = {}
    watchers: list[Watcher] = []
    try:
        nodes = [await _add_node(net, "zero", 0, 2), await _add_node(net, "one", 1, 2)]
        upstreams = [arg for node in nodes for arg in ("--upstream", node.proxy.url)]
        common = ["--database", pg_url, "--plc", net.plc_url]
        seq_port = free_port()
        seq_url = f"http://127.0.0.1:{seq_port}"
        seq_args = ["--role", "sequencer", *common, "--port", str(seq_port), "--data", str(tmp_path / "seq")]

        def ingest_args(index: int) -> list[str]:
            data = str(tmp_path / f"ingest{index}")
            return ["--role", "ingest", "--partition", f"{index}/2", *common, *upstreams, "--data", data]

        early = await net.create_account(nodes[1], "early-one.test")  # seeded from listRepos
        procs["seq"] = await spawn_relay(seq_args, tmp_path / "seq.log")
        for index in (0, 1):  # each takes the one host of its partition (both are given both)
            args = [*ingest_args(index), "--port", "0"]
            procs[f"ingest{index}"] = await spawn_relay(args, tmp_path / f"ingest{index}.log")
        await until(lambda: all(n.proxy.connected > 0 for n in nodes), "each host subscribed to", 30)

        def seeded() -> bool:  # by partition 1's process, whichever process stored the host's row
            with psycopg.connect(pg_url) as conn:
                query = "SELECT rev FROM atrepo_relay.accounts WHERE did = %s"
                row = conn.execute(query, (early.did,)).fetchone()
            return row is not None and row[0] is not None

        await until(seeded, "the early account seeded")
        fan_port = free_port()
        fan_url = f"http://127.0.0.1:{fan_port}"
        fan_args = ["--role", "fanout", *common, "--port", str(fan_port), "--data", str(tmp_path / "fan")]
        procs["fan"] = await spawn_relay(fan_args, tmp_path / "fan.log")

        accounts = [early] + [
            await net.create_account(node, f"u{i}-{node.name}.test") for node in nodes for i in range(2)
        ]
        direct = Watcher(seq_url, net.plc_url, http)
        via = Watcher(fan_url, net.plc_url, http)
        watchers += [direct, via]
        direct.start()
        via.start()

        stop_writing = asyncio.Event()

        async def keep_writing() -> None:  # until told to stop, and at least 12 rounds
            rounds = 0
            while rounds < 12 or not stop_writing.is_set():
                await asyncio.gather(*(net.write(a, 1) for a in accounts))
                rounds += 1

        def written() -> int:
            return len(net.writes)

        writing = asyncio.get_running_loop().create_task(keep_writing())
        await until(lambda: len(direct.events) >= 12, "the sequencer streaming", 30)
        await _kill(procs["ingest0"])  # mid-stream: its host's events wait upstream meanwhile
        at_kill = written()
        await until(lambda: written() >= at_kill + 8, "writes while an ingest process is down")
        procs["ingest0"] = await spawn_relay([*ingest_args(0), "--port", "0"], tmp_path / "ingest0.log")
        seen = len(direct.events)
        await until(lambda: len(direct.events) >= seen + 8, "more events after the ingest restart", 30)
        await _kill(procs["seq"])  # what the ingest processes queue meanwhile waits in the database
        at_kill = written()
        await until(lambda: written() >= at_kill + 8, "writes while the sequencer is down")
        procs["seq"] = await spawn_relay(seq_args, tmp_path / "seq.log")
        await until(lambda: written() >= at_kill + 16, "writes after the sequencer restart")
        stop_writing.set()
        await asyncio.wait_for(writing, 60)

        async def settled() -> bool:
            text = await _metrics(http, seq_url)
            head = int(metric(text, "atrepo_relay_head_seq"))
            missing = [w for w in net.writes if not direct.accounted(w) or not via.accounted(w)]
            return (
                not missing
                and metric(text, "atrepo_relay_pending_events") == 0
                and direct.last == head
                and via.last == head
            )

        await until(settled, "every write through both subscribers, nothing queued", 40)
        assert direct.subscriber.stats.connects >= 2  # it did reconnect to the restarted sequencer
        for watcher in watchers:
            assert watcher.problems == [], watcher.problems  # verified, chained, nothing twice
            assert sorted(watcher.seqs) == list(range(1, len(watcher.seqs) + 1))  # no gap, no duplicate
            assert len(watcher.seqs) == len(set(watcher.seqs))
        assert via.raws == direct.raws  # the same events, seqs and bytes from sequencer and fan-out
        assert len(net.writes) >= 12 * len(accounts)
        for account in accounts:  # each account's creates arrive in the order they were written
            order = [seq for seq, summary in sorted(direct.events.items()) if summary[1] == account.did]
            revs = [direct.events[seq][2] for seq in order if direct.events[seq][0] == "#commit"]
            assert revs == sorted(revs) and len(revs) >= 12, (account.did, revs)
            assert len(set(revs)) == len(revs)
        for node in nodes:  # each host had one ingest process (its partition's) at a time
            assert node.proxy.stats["connections"] >= 1
        async with http.get(f"{seq_url}/xrpc/_health") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await stop_all(watchers, procs.values())
        await net.close()


async def test_request_crawl_on_the_sequencer_reaches_the_ingest_of_its_partition(
    tmp_path: Path, http: aiohttp.ClientSession, pg_url: str
) -> None:
    """The sequencer stores a crawled host; the ingest process of its partition takes it on its next
    read of the hosts table, subscribes, and its events come out of the sequencer."""
    net = Net(tmp_path, http)
    try:
        node = await net.add_node("crawled")

        def config(name: str, **settings: Any) -> RelayConfig:
            return RelayConfig(
                port=0,
                data_dir=tmp_path / name,
                plc_url=net.plc_url,
                database=pg_url,
                crawl_allow_private=True,
                **settings,
            )

        sequencer = await start_fanout(config("seq", role="sequencer"))
        ingest = await start_relay(config("ingest", role="ingest", partition=(0, 1), hosts_refresh_s=0.2))
        try:
            assert ingest.context.hosts.links == {}
            async with http.post(
                f"{sequencer.url}/xrpc/com.atproto.sync.requestCrawl", json={"hostname": node.key}
            ) as resp:
                assert resp.status == 200, await resp.text()
            await until(lambda: node.proxy.connected > 0, "the ingest process subscribed to the host")
            account = await net.create_account(node, "crawled.test")
            await net.write(account, 2)
            watcher = Watcher(sequencer.url, net.plc_url, http)
            watcher.start()
            try:
                await until(lambda: all(watcher.accounted(w) for w in net.writes), "the writes relayed")
                assert watcher.problems == []
            finally:
                await watcher.stop()
            assert sequencer.sequenced >= 3 and ingest.context.ingest.flushed_events >= 3
            for path in ("/", "/metrics", "/xrpc/_health"):  # what an ingest process serves
                async with http.get(f"{ingest.url}{path}") as resp:
                    assert resp.status == 200, (path, await resp.text())
            async with http.get(f"{ingest.url}/xrpc/com.atproto.sync.subscribeRepos") as resp:
                assert resp.status == 501  # no firehose: its events come out of the sequencer
            async with http.get(f"{ingest.url}/status.json") as resp:
                events = (await resp.json())["events"]
            # the shared log's head (the sequencer's), not the fan-out this process does not run
            assert events["headSeq"] == sequencer.fanout.tail >= 3
            assert events["queuedForSequencer"] == 0
        finally:
            await ingest.stop()
            await sequencer.stop()
    finally:
        await net.close()


def test_role_refusals(tmp_path: Path) -> None:
    """Every role but ``all`` needs a PostgreSQL ``--database``; ``--partition`` goes with ``--role
    ingest`` only, and an ingest process needs one."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # the command configures logging: put it back
    try:
        runner = CliRunner()
        app = build_app()
        env = {"ATREPO_DATABASE": None}
        pg = ["--database", "postgresql://relay@127.0.0.1:1/atrepo"]
        data = ["--data", str(tmp_path)]
        cases = [
            (["--role", "ingest", "--partition", "0/2"], "PostgreSQL"),
            (["--role", "sequencer"], "PostgreSQL"),
            (["--role", "ingest", *pg], "--partition"),
            (["--partition", "0/2", *pg], "--role ingest"),
            (["--role", "sequencer", "--partition", "0/2", *pg], "--role ingest"),
            (["--role", "ingest", "--partition", "2/2", *pg], "0 <= I < N"),
            (["--role", "ingest", "--partition", "x", *pg], "0 <= I < N"),
            (["--role", "shard", *pg], "--role"),
            (["--role", "sequencer", "--upstream", "https://pds.example", *pg], "ingest processes"),
        ]
        for args, message in cases:
            result = runner.invoke(app, ["relay", *args, *data], env=env)
            assert result.exit_code == 2, (args, result.output)
            assert message in result.output, (args, result.output)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
