"""Issue 11's acceptance: the relay under upstream faults, end to end, on 127.0.0.1.

Three atrepo hosts (the first runs the PLC directory), each behind a
fault-injecting proxy (``upstream_proxy.py``) that is the host's public URL;
a relay with the three proxies as upstreams; a verifying subscriber of the
relay (``FrameVerifier``: Sync 1.1 checks with keys from the PLC). One
scenario then makes the upstreams misbehave, one fault at a time, and checks
both what the relay *did* (dropped, desynchronized and restated, moved,
recovered) and that it *shows* it (a ``Fault`` with its reason,
``atrepo_relay_faults_total{kind}``, host and account states):

* a host restarts: the relay reconnects and resumes, nothing lost or doubled;
* an upstream stalls (frames held), then its connection is cut: the held
  frames arrive, the relay resumes from its cursor;
* a forged commit (re-signed with a stranger's key): ``invalid-signature``
  after exactly one re-resolution of the DID (counted at a proxy in front of
  the PLC directory), dropped; the account's next commit then does not
  chain: resynced;
* commits that never arrive (a ``prevData`` gap): ``desynchronized``, the
  repo is fetched, a ``#sync`` restates it, later commits chain again;
* a host sends a valid commit of an account another host serves:
  ``authority``, dropped, the account untouched;
* a host restarts with its seq gone back: ``FutureCursor``, the host shows
  ``idle`` with the reason, the relay replays its window and recovers;
* an account migrates between hosts (``atrepo account migrate``'s flow):
  the relay moves it to its new host and follows it there;
* a subscriber of the relay that stops reading is cut (``ConsumerTooSlow``)
  and the verifying subscriber is not disturbed.

At the end every account's ``getLatestCommit`` at the relay is its host's,
every record the test wrote is in the verified stream (a create op, or under
a later ``#sync``), and the stream's seqs are contiguous and unique.

A second test kills the relay (a subprocess) with SIGKILL in the middle of a
stream and restarts it: every event it had emitted is still there, with the
same seq, and the per-host cursor resumes without loss or duplicates.

Both run twice: with the relay's store on SQLite and on PostgreSQL
(``--database``, a fresh database of the test cluster).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from relay_support import Account, Net, Watcher, free_port, metric, spawn_relay, stop_all, until
from upstream_proxy import UpstreamProxy, bind_local

from atrepo.cli.migrate import MigrationOptions, QuietReporter, migrate
from atrepo.core.events import ErrorFrame, decode_frame
from atrepo.relay import RelayConfig, start_relay
from atrepo.relay.app import RunningRelay

pytestmark = pytest.mark.timeout(150)


def _faults(relay: RunningRelay, kind: str, did: str | None = None) -> list[Any]:
    return [f for f in relay.context.ingest.faults if f.kind == kind and (did is None or f.did == did)]


async def _in_step(
    net: Net, relay: RunningRelay, watcher: Watcher, *accounts: Account, timeout: float = 20.0
) -> None:
    """Wait until the relay's ``getLatestCommit`` of each account is its host's, and its stream said so.

    (The relay answers ``getLatestCommit`` from the account state it staged,
    which can be a moment ahead of the event in its firehose.)
    """

    async def same() -> bool:
        for account in accounts:
            host = await net.latest(account.node.url, account.did)
            mine = await net.latest(relay.url, account.did)
            if host[0] != 200 or mine != host or watcher.heads.get(account.did) != host[1]["rev"]:
                return False
        return True

    await until(same, f"the relay in step with the hosts for {[a.handle for a in accounts]}", timeout)


async def _status_json(net: Net, relay: RunningRelay) -> dict[str, Any]:
    async with net.http.get(f"{relay.url}/status.json") as resp:
        assert resp.status == 200, await resp.text()
        page: dict[str, Any] = await resp.json()
        return page


async def _caught_up(relay: RunningRelay, watcher: Watcher) -> None:
    await until(
        lambda: relay.context.fanout.tail > 0 and watcher.last >= relay.context.fanout.tail,
        "the verifying subscriber at the relay's head",
    )


async def test_relay_under_upstream_faults(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    """The scenario of the module docstring, one fault after another on one running relay (its store
    on SQLite, then on PostgreSQL)."""
    net = Net(tmp_path, http)
    relay: RunningRelay | None = None
    watcher: Watcher | None = None
    plc = UpstreamProxy(bind_local())  # the relay's way to the PLC directory: counts its lookups
    try:
        one, two, three = [await net.add_node(name) for name in ("one", "two", "three")]
        await plc.start(net.plc_url)
        relay = await start_relay(
            RelayConfig(
                port=0,
                data_dir=tmp_path / "relay",
                plc_url=plc.url,
                upstreams=tuple(n.proxy.url for n in net.nodes),
                synchronous="NORMAL",
                database=database,
            )
        )
        hosts = relay.context.hosts
        links = {n.name: hosts.by_name(n.key) for n in net.nodes}
        assert all(link is not None for link in links.values()), [lk.key for lk in hosts.links.values()]
        await until(lambda: all(n.proxy.connected for n in net.nodes), "the relay subscribed to every proxy")
        watcher = Watcher(relay.url, net.plc_url, http)
        watcher.start()

        alice = await net.create_account(one, "alice.test")
        bob = await net.create_account(one, "bob.test")
        carol = await net.create_account(two, "carol.test")
        dave = await net.create_account(two, "dave.test")
        erin = await net.create_account(three, "erin.test")
        frank = await net.create_account(three, "frank.test")
        everyone = (alice, bob, carol, dave, erin, frank)
        for account in everyone:
            await net.write(account, 3)
        await _in_step(net, relay, watcher, *everyone)
        await _caught_up(relay, watcher)
        assert not relay.context.ingest.faults, list(relay.context.ingest.faults)

        # --- a host restarts: reconnect, resume, nothing lost or doubled --------------------
        connections = two.proxy.stats["connections"]
        await two.restart()
        await until(lambda: two.proxy.stats["connections"] > connections, "the relay back on host two")
        resumed = two.proxy.cursors[-1]  # from its cursor: not the live head, not the start
        assert resumed is not None and int(resumed) > 0, two.proxy.cursors
        await net.login(carol)
        await net.login(dave)
        await net.write(carol, 2)
        await net.write(dave, 2)
        await _in_step(net, relay, watcher, carol, dave)
        await _caught_up(relay, watcher)
        assert not relay.context.ingest.faults, list(relay.context.ingest.faults)

        ingest = relay.context.ingest

        # --- a stalled upstream, then its connection cut: held frames arrive, nothing lost ---
        one.proxy.pause()
        stalled = await net.write(bob, 2)
        status, seen = await net.latest(relay.url, bob.did)
        assert status == 200 and seen["rev"] < stalled[-1].rev  # held at the proxy
        connections = one.proxy.stats["connections"]
        one.proxy.resume()
        await _in_step(net, relay, watcher, bob)
        await one.proxy.close_streams()
        await until(lambda: one.proxy.stats["connections"] > connections, "the relay back on host one")
        await net.write(bob, 1)
        await _in_step(net, relay, watcher, bob)
        assert not ingest.faults, list(ingest.faults)

        # --- a forged commit: invalid-signature, dropped; the next one does not chain -------
        lookups = plc.requests[alice.did]
        one.proxy.forge_next_commit(alice.did)
        await net.write(alice, 1)
        await until(lambda: _faults(relay, "invalid-signature", alice.did), "alice's forged commit rejected")
        assert plc.requests[alice.did] == lookups + 1  # its DID re-resolved once, then rejected
        assert one.proxy.forged and one.proxy.forged[0][0] == alice.did
        forged = _faults(relay, "invalid-signature", alice.did)[0]
        assert forged.host == one.key and "signature" in forged.reason, forged
        await net.write(alice, 2)
        await until(lambda: _faults(relay, "desynchronized", alice.did), "alice desynchronized")
        await _in_step(net, relay, watcher, alice)

        # --- commits that never arrive: a prevData gap, a resync, a #sync ------------------
        two.proxy.drop_commits(carol.did, 2)
        await net.write(carol, 2)
        await until(lambda: len(two.proxy.dropped) == 2, "two of carol's commits dropped by the proxy")
        gap = await net.write(carol, 1)
        fetched = two.proxy.requests["com.atproto.sync.getRepo"]
        await until(lambda: _faults(relay, "desynchronized", carol.did), "carol desynchronized")
        reason = _faults(relay, "desynchronized", carol.did)[0].reason
        assert "prevData" in reason or "since" in reason, reason
        await _in_step(net, relay, watcher, carol)
        await _caught_up(relay, watcher)
        assert carol.did in watcher.syncs and max(watcher.syncs[carol.did]) >= gap[0].rev
        assert two.proxy.requests["com.atproto.sync.getRepo"] > fetched  # the repo fetched again
        await net.write(carol, 2)  # and the stream carries it forward again
        await _in_step(net, relay, watcher, carol)
        await _caught_up(relay, watcher)
        carol_states = [status for did, _active, status in watcher.accounts if did == carol.did]
        assert carol_states[-2:] == ["desynchronized", None], watcher.accounts
        status, repo_status = await net.call(
            relay.url, "com.atproto.sync.getRepoStatus", params={"did": carol.did}
        )
        assert status == 200 and repo_status["active"] is True, repo_status

        # --- a host claims an account another host serves: authority, dropped --------------
        before = await net.latest(relay.url, bob.did)
        await net.write(bob, 1)
        await _in_step(net, relay, watcher, bob)
        foreign = next(f for f in reversed(one.proxy.recent_commits) if f.repo == bob.did)
        assert await two.proxy.inject(foreign) >= 1
        await until(lambda: _faults(relay, "authority", bob.did), "bob's commit from host two refused")
        refused = _faults(relay, "authority", bob.did)[0]
        assert refused.host == two.key and one.key in refused.reason, refused
        assert (await net.latest(relay.url, bob.did)) == (await net.latest(one.url, bob.did)) != before
        account = await ingest.account(bob.did)
        assert account is not None and account.host_id == links["one"].id

        # --- a host restarts with its seq gone back: FutureCursor, idle, replay ------------
        three.proxy.hold_after_error()
        three.proxy.reset_seq(3)
        await three.restart()
        await until(lambda: "FutureCursor" in three.proxy.error_frames, "the host answered FutureCursor")

        async def idle() -> bool:
            status, body = await net.call(
                relay.url, "com.atproto.sync.getHostStatus", params={"hostname": three.key}
            )
            return status == 200 and body["status"] == "idle"

        await until(idle, "host three shown idle")
        assert "FutureCursor" in (links["three"].last_error or ""), links["three"].last_error
        future = [f for f in _faults(relay, "upstream-error") if f.host == three.key]
        assert future and "FutureCursor" in future[0].reason, future
        status, listed = await net.call(relay.url, "com.atproto.sync.listHosts")
        assert {h["hostname"]: h["status"] for h in listed["hosts"]}[three.key] == "idle", listed
        page = await _status_json(net, relay)
        shown = {h["hostname"]: h for h in page["hosts"]["list"]}[three.key]
        assert shown["status"] == "idle" and "FutureCursor" in shown["lastError"], shown
        three.proxy.release()
        await until(lambda: links["three"].status == "active", "host three active again")
        assert three.proxy.cursors[-1] == "0", three.proxy.cursors  # it replays the host's window
        await net.login(erin)
        await net.login(frank)
        await net.write(erin, 2)
        await net.write(frank, 1)
        await _in_step(net, relay, watcher, erin, frank)
        async with http.get(f"{relay.url}/metrics") as resp:  # the replayed window: all duplicates
            assert metric(await resp.text(), "atrepo_relay_dropped_events_total", reason="duplicate") > 0

        # --- an account migrates from host two to host three -------------------------------
        assert two.running is not None
        result = await migrate(
            MigrationOptions(
                from_url=two.url,
                to_url=three.url,
                handle=dave.handle,
                password="correct horse",
                from_admin_password=two.running.context.secrets.admin_password,
            ),
            reporter=QuietReporter(),
            session=http,
        )
        assert result.status == "done", result
        dave.node = three
        await net.login(dave)
        await net.write(dave, 2)
        await _in_step(net, relay, watcher, dave)

        async def moved() -> bool:
            row = await ingest.account(dave.did)
            return row is not None and row.host_id == links["three"].id

        await until(moved, "dave's account moved to host three")
        # the old host's "#account deactivated" of dave: dropped as a former host's notice (or,
        # had it come before the move, superseded by the new host's "#account active")
        await until(
            lambda: any(x[1] == "#account" for x in list(two.proxy.seen)[-3:] if x[2] == dave.did),
            "host two's deactivation of dave sent",
        )

        async def notice_settled() -> bool:
            async with http.get(f"{relay.url}/metrics") as resp:
                dropped = metric(await resp.text(), "atrepo_relay_dropped_events_total", reason="former-host")
            return dropped >= 1 or (dave.did, False, "deactivated") in watcher.accounts

        await until(notice_settled, "the old host's deactivation handled")
        status, repo_status = await net.call(
            relay.url, "com.atproto.sync.getRepoStatus", params={"did": dave.did}
        )
        assert status == 200 and repo_status["active"] is True, repo_status
        status, listed = await net.call(relay.url, "com.atproto.sync.listHosts")
        counts = {h["hostname"]: h["accountCount"] for h in listed["hosts"]}
        assert counts == {one.key: 2, two.key: 1, three.key: 3}, listed

        # --- a subscriber that stops reading is cut; the verifying one is not ---------------
        await _slow_subscriber(net, relay, watcher, everyone)

        # --- the end: everyone in step, every write in the verified stream ------------------
        await _in_step(net, relay, watcher, *everyone)
        await _caught_up(relay, watcher)
        assert watcher.problems == []
        assert sorted(watcher.seqs) == list(range(1, len(watcher.seqs) + 1))  # contiguous, unique
        missing = [w for w in net.writes if not watcher.accounted(w)]
        assert missing == [], missing[:5]
        print("verdicts", watcher.verdicts, "faults", dict(ingest.fault_counts))
        async with http.get(f"{relay.url}/metrics") as resp:
            text = await resp.text()
        for kind in ("invalid-signature", "desynchronized", "authority", "upstream-error"):
            assert ingest.fault_counts[kind] >= 1, kind
            assert metric(text, "atrepo_relay_faults_total", kind=kind) == ingest.fault_counts[kind], kind
        # and on the status page, each with who, whom and why
        page = await _status_json(net, relay)
        assert page["faults"]["verificationByCheck"].get("signature") == 1, page["faults"]
        store = page["service"]["store"]  # where the events are, its password (if any) hidden
        assert store == relay.context.store.location
        assert ("atrepo_relay" in store) if database else store.endswith("relay.sqlite"), store
        recent = {(f["kind"], f["host"], f["did"]): f["reason"] for f in page["faults"]["recent"]}
        assert "signature" in recent[("invalid-signature", one.key, alice.did)]
        assert "prevData" in recent[("desynchronized", two.key, carol.did)]
        assert "prevData" in recent[("desynchronized", one.key, alice.did)]
        assert one.key in recent[("authority", two.key, bob.did)]
        assert "FutureCursor" in recent[("upstream-error", three.key, None)]
    finally:
        if watcher is not None:
            await watcher.stop()
        if relay is not None:
            await relay.stop()
        await plc.stop()
        await net.close()


async def _slow_subscriber(
    net: Net, relay: RunningRelay, watcher: Watcher, everyone: tuple[Account, ...]
) -> None:
    """A raw WebSocket client with a tiny receive buffer that never reads: ConsumerTooSlow."""

    def small_buffer(addr_info: Any) -> socket.socket:
        family, kind, proto, _name, _addr = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    connector = aiohttp.TCPConnector(socket_factory=small_buffer)
    async with aiohttp.ClientSession(connector=connector) as slow_http:
        ws_url = relay.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
        async with slow_http.ws_connect(ws_url, max_msg_size=0, autoping=False) as ws:
            await until(lambda: len(relay.context.fanout.subscribers) >= 2, "the slow subscriber connected")
            connects = watcher.subscriber.stats.connects
            big = "x" * 20_000

            async def slow_consumers() -> float:
                async with net.http.get(f"{relay.url}/metrics") as resp:
                    text = await resp.text()
                found = [ln for ln in text.splitlines() if ln.split(" ")[0].endswith("_slow_consumers_total")]
                return float(found[0].split()[-1]) if found else 0.0

            # fill the socket's buffers with big events, then fall max_queue (500) events behind
            for _round in range(60):
                await asyncio.gather(*(net.write(a, 5, "com.example.blob", big) for a in everyone))
                if await slow_consumers() >= 1:
                    break
            assert await slow_consumers() >= 1
            # what it reads now: the frames the socket held, then the end (the error frame when the
            # relay could still send it, else the connection cut after the close timeout)
            frames = 0
            last: Any = None
            while True:
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                frames += 1
                last = decode_frame(msg.data)
            assert frames > 0
            if isinstance(last, ErrorFrame):
                assert last.error == "ConsumerTooSlow", last
            else:
                assert msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                )
            await until(lambda: len(relay.context.fanout.subscribers) == 1, "the slow subscriber gone")
            print(
                "slow subscriber: read",
                frames,
                "frames, then",
                msg.type,
                last if isinstance(last, ErrorFrame) else "",
            )
            assert watcher.subscriber.stats.connects == connects  # the verifying one never reconnected


async def test_relay_killed_and_restarted(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    """SIGKILL mid-stream: what was emitted survives with its seq; the host's cursor resumes (SQLite and
    PostgreSQL: a killed relay's advisory lock goes with its connection, so the restart is not refused)."""
    net = Net(tmp_path, http)
    procs: list[asyncio.subprocess.Process] = []
    watchers: list[Watcher] = []
    try:
        node = await net.add_node("one")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["--port", str(port), "--data", str(tmp_path / "relay"), "--plc", net.plc_url]
        args += ["--upstream", node.proxy.url, "--admin-password", "relay-admin"]
        if database is not None:
            args += ["--database", database]
        procs.append(await spawn_relay(args, tmp_path / "relay.log"))
        await until(lambda: node.proxy.connected > 0, "the relay subscribed")
        first = Watcher(url, net.plc_url, http)
        watchers.append(first)
        first.start()
        accounts = [await net.create_account(node, f"user{i}.test") for i in range(3)]

        async def keep_writing() -> None:
            for _round in range(12):
                await asyncio.gather(*(net.write(a, 1) for a in accounts))

        writing = asyncio.get_running_loop().create_task(keep_writing())
        await until(lambda: len(first.events) >= 20, "the relay emitting")
        victim = procs[-1]
        victim.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(victim.wait(), 10) == -signal.SIGKILL
        emitted = dict(first.events)  # everything any subscriber saw before the kill
        cursors_before = len(node.proxy.cursors)
        procs.append(await spawn_relay(args, tmp_path / "relay.log"))
        await asyncio.wait_for(writing, 60)
        # the host's cursor resumed where the relay had made it durable: not the head, not zero
        await until(lambda: len(node.proxy.cursors) > cursors_before, "the restarted relay subscribed")
        resumed = node.proxy.cursors[cursors_before]
        assert resumed is not None and int(resumed) > 0, node.proxy.cursors

        heads: dict[str, str] = {}

        async def in_step() -> bool:
            for account in accounts:
                host = await net.latest(node.url, account.did)
                if (
                    await net.latest(url, account.did) != host
                    or first.heads.get(account.did) != host[1]["rev"]
                ):
                    return False
                heads[account.did] = host[1]["rev"]
            return True

        await until(in_step, "the restarted relay in step with the host", 30)
        second = Watcher(url, net.plc_url, http)
        watchers.append(second)
        second.start()
        status, hosts = await net.call(url, "com.atproto.sync.listHosts")
        assert status == 200 and hosts["hosts"][0]["status"] == "active", hosts

        await until(
            lambda: second.heads == heads and second.last >= first.last, "the second subscriber at the head"
        )
        for watcher in (first, second):
            assert watcher.problems == [], watcher.problems
            assert sorted(watcher.seqs) == list(range(1, len(watcher.seqs) + 1))
        # no emitted event lost or renumbered
        assert {seq: second.events.get(seq) for seq in emitted} == emitted
        assert first.events == second.events
        missing = [w for w in net.writes if not second.accounted(w)]
        assert missing == [], missing[:5]
        print("kill -9: emitted before", len(emitted), "total", len(second.events), "resumed at", resumed)
    finally:
        await stop_all(watchers, procs)
        await net.close()
