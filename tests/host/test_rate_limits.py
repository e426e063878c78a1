"""Rate limits on a real host over HTTP: 429 ``RateLimitExceeded`` with the reference's headers.

Hosts here are started with small limits (the figures are settings) and the
hand-moved test clock as the windows' clock, so a window ends when the test
moves the clock, never by waiting. The default figures are checked on the
plain ``host`` fixture, which runs with limits on, as a new operator's would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, Reply, TokenClock
from test_serve_cli import STOP_TIMEOUT_S, free_port, wait_healthy

from atrepo.core.errors import InputFileError
from atrepo.host import HostConfig, start_host
from atrepo.host.config import REPO_WRITE_RULE, load_config

POST = "com.example.thing"  # no lexicon: any record key, any value
AW = "com.atproto.repo.applyWrites"
CREATE_SESSION = "com.atproto.server.createSession"
DESCRIBE = "com.atproto.server.describeServer"


@contextlib.asynccontextmanager
async def limited_host(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None, **settings: Any
) -> AsyncIterator[HostClient]:
    """A host with the given settings (``rate_limit_*`` figures, ``rate_limits``, ``trust_proxy``)."""
    config = HostConfig(
        host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database, **settings
    )
    running = await start_host(config, clock_ms=clock, validate_output=True)
    try:
        yield HostClient(running, http, clock)
    finally:
        await running.stop()


async def new_user(host: HostClient, handle: str) -> tuple[str, str]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def login(host: HostClient, identifier: str, password: str = "correct horse", **headers: str) -> Reply:
    return await host.call(
        CREATE_SESSION, body={"identifier": identifier, "password": password}, headers=headers
    )


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text}


def assert_refused(reply: Reply, limit: int, window_s: int) -> None:
    """A 429 as the reference sends it: the error, the message, and the refusing limit's headers."""
    assert reply.status == 429, reply.body
    assert reply.body == {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
    h = reply.headers
    assert h["RateLimit-Limit"] == str(limit) and h["RateLimit-Remaining"] == "0"
    assert h["RateLimit-Policy"] == f"{limit};w={window_s}"
    assert 1 <= int(h["Retry-After"]) <= window_s
    assert "Retry-After" in h["Access-Control-Expose-Headers"]


async def metric(host: HostClient, limiter: str) -> float:
    async with host.http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    prefix = f'atrepo_xrpc_rate_limited_total{{limiter="{limiter}"}} '
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :])


async def test_the_default_host_sends_the_reference_figures(host: HostClient) -> None:
    reply = await host.call(DESCRIBE)
    assert reply.status == 200
    h = reply.headers
    assert (h["RateLimit-Limit"], h["RateLimit-Remaining"], h["RateLimit-Policy"]) == (
        "3000",
        "2999",
        "3000;w=300",
    )
    reset = int(h["RateLimit-Reset"])
    assert host.clock.ms // 1000 < reset <= host.clock.ms // 1000 + 300
    assert "RateLimit-Remaining" in h["Access-Control-Expose-Headers"]
    # a login attempt reports the tightest of its limits: 30 per 5 minutes for that identifier
    reply = await login(host, "nobody.test", "wrong")
    assert reply.status == 401
    assert (reply.headers["RateLimit-Limit"], reply.headers["RateLimit-Remaining"]) == ("30", "29")
    # probes and the scrape are not counted
    async with host.http.get(f"{host.url}/xrpc/_health") as resp:
        assert resp.status == 200 and "RateLimit-Limit" not in resp.headers
    assert await metric(host, "global-ip-5m") == 0


async def test_create_session_is_refused_after_n_attempts_until_the_window_ends(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(tmp_path, http, clock, database, rate_limit_create_session="3/5m,10/1d") as host:
        await new_user(host, "alice.test")
        for left in (2, 1, 0):
            reply = await login(host, "alice.test", "guess")
            assert reply.status == 401 and reply.headers["RateLimit-Remaining"] == str(left)
        assert_refused(await login(host, "alice.test"), 3, 300)  # the right password no longer helps
        assert_refused(await login(host, "ALICE.test "), 3, 300)  # nor another spelling of the name
        assert (await login(host, "bob.test", "guess")).status == 401  # another identifier: its own budget
        assert await metric(host, "createSession-5m") == 2
        clock.advance(299)
        assert_refused(await login(host, "alice.test"), 3, 300)
        clock.advance(1)  # the 5-minute window is over; the day's (10) still has room
        reply = await login(host, "alice.test")
        assert reply.status == 200, reply.body
        assert reply.headers["RateLimit-Remaining"] == "2"  # the tightest: 2 of 3 left, 4 of 10


async def test_write_points_are_charged_per_account_and_refused_before_commit(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(tmp_path, http, clock, database, rate_limit_repo_writes="30/1h,100/1d") as host:
        alice, alice_token = await new_user(host, "alice.test")
        bob, bob_token = await new_user(host, "bob.test")
        store = host.running.context.store

        async def write(nsid: str, token: str, **body: Any) -> Reply:
            return await host.call(nsid, body=body, token=token)

        creates = [
            {"$type": f"{AW}#create", "collection": POST, "rkey": f"p{i}", "value": post(str(i))}
            for i in range(8)
        ]
        reply = await write(AW, alice_token, repo=alice, writes=creates)  # 8 creates: 24 points
        assert reply.status == 200, reply.body
        assert (reply.headers["RateLimit-Limit"], reply.headers["RateLimit-Remaining"]) == ("30", "6")
        mixed = [
            {"$type": f"{AW}#update", "collection": POST, "rkey": "p0", "value": post("edited")},
            {"$type": f"{AW}#delete", "collection": POST, "rkey": "p1"},
            {"$type": f"{AW}#create", "collection": POST, "rkey": "p8", "value": post("8")},
        ]
        reply = await write(AW, alice_token, repo=alice, writes=mixed)  # 2 + 1 + 3 = 6 points: exactly 30
        assert reply.status == 200 and reply.headers["RateLimit-Remaining"] == "0"
        seq, head = store.head_seq(), store.repo_head(alice)
        reply = await write(
            "com.atproto.repo.deleteRecord", alice_token, repo=alice, collection=POST, rkey="p2"
        )
        assert_refused(reply, 30, 3600)
        reply = await write(
            "com.atproto.repo.createRecord", alice_token, repo=alice, collection=POST, record=post("x")
        )
        assert_refused(reply, 30, 3600)
        assert (store.head_seq(), store.repo_head(alice)) == (seq, head)  # nothing was committed
        assert store.get_record(alice, POST, "p2") is not None
        assert await metric(host, "repo-write-1h") == 2
        # another account's points are its own
        reply = await write(
            "com.atproto.repo.createRecord", bob_token, repo=bob, collection=POST, record=post("bob")
        )
        assert reply.status == 200 and reply.headers["RateLimit-Remaining"] == "27"
        clock.advance(3600)
        # a new hour: 28 of 30 left after this put; the day's window has 24 + 6 + 1 + 3 + 2 of 100
        # (refused calls count, as the reference's), so the hour is still the tightest
        reply = await write(
            "com.atproto.repo.putRecord",
            alice_token,
            repo=alice,
            collection=POST,
            rkey="p3",
            record=post("3"),
        )
        assert reply.status == 200, reply.body
        assert reply.headers["RateLimit-Remaining"] == "28"


async def test_apply_writes_over_the_remaining_points_is_refused_whole(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(tmp_path, http, clock, database, rate_limit_repo_writes="10/1h") as host:
        alice, token = await new_user(host, "alice.test")
        store = host.running.context.store
        for i in range(3):  # 9 points
            reply = await host.call(
                "com.atproto.repo.createRecord",
                body={"repo": alice, "collection": POST, "rkey": f"r{i}", "record": post(str(i))},
                token=token,
            )
            assert reply.status == 200
        seq = store.head_seq()
        writes = [{"$type": f"{AW}#delete", "collection": POST, "rkey": f"r{i}"} for i in range(3)]
        assert_refused(await host.call(AW, body={"repo": alice, "writes": writes}, token=token), 10, 3600)
        assert store.head_seq() == seq
        assert [r.uri.rsplit("/", 1)[1] for r in store.list_records(alice, POST, limit=10, reverse=True)] == [
            "r0",
            "r1",
            "r2",
        ]


async def test_global_limit_per_client_address(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(tmp_path, http, clock, database, rate_limit_global="4/1m") as host:
        for left in range(3, -1, -1):
            reply = await host.call(DESCRIBE)
            assert reply.status == 200 and reply.headers["RateLimit-Remaining"] == str(left)
        assert_refused(await host.call(DESCRIBE), 4, 60)
        # every XRPC path counts, unknown ones too; a forged X-Forwarded-For is not believed
        assert_refused(await host.call("com.example.nothing"), 4, 60)
        assert_refused(await host.call(DESCRIBE, headers={"X-Forwarded-For": "203.0.113.5"}), 4, 60)
        assert await metric(host, "global-ip-1m") == 3
        async with http.get(f"{host.url}/xrpc/_health") as resp:
            assert resp.status == 200
        async with http.options(
            f"{host.url}/xrpc/{DESCRIBE}", headers={"Origin": "https://app.example"}
        ) as resp:
            assert resp.status == 204  # a CORS preflight is not a call
        clock.advance(60)
        assert (await host.call(DESCRIBE)).status == 200


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(
        tmp_path, http, clock, database, rate_limit_global="2/1m", trust_proxy=True
    ) as host:
        one = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}  # the client wrote 6.6.6.6; the proxy the rest
        for _ in range(2):
            assert (await host.call(DESCRIBE, headers=one)).status == 200
        assert_refused(await host.call(DESCRIBE, headers=one), 2, 60)
        assert_refused(await host.call(DESCRIBE, headers={"X-Forwarded-For": "7.7.7.7, 198.51.100.1"}), 2, 60)
        reply = await host.call(DESCRIBE, headers={"X-Forwarded-For": "198.51.100.2"})
        assert reply.status == 200 and reply.headers["RateLimit-Remaining"] == "1"


async def test_create_account_per_address(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async with limited_host(tmp_path, http, clock, database, rate_limit_create_account="2/5m") as host:
        assert (await host.create_account("alice.test")).status == 200
        bad = await host.create_account("x.test")  # refused for its handle, still an attempt
        assert bad.error == "InvalidHandle" and bad.headers["RateLimit-Remaining"] == "0"
        assert_refused(await host.create_account("carol.test"), 2, 300)
        assert host.running.context.store.get_account_by_handle("carol.test") is None
        assert await metric(host, "createAccount-5m") == 1


async def test_the_switch_turns_every_limit_off(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    settings = {"rate_limits": False, "rate_limit_global": "1/1m", "rate_limit_create_session": "1/5m"}
    async with limited_host(tmp_path, http, clock, database, **settings) as host:
        for _ in range(3):
            reply = await host.call(DESCRIBE)
            assert reply.status == 200 and "RateLimit-Limit" not in reply.headers
            assert (await login(host, "nobody.test", "wrong")).status == 401
        async with http.get(f"{host.url}/metrics") as resp:
            assert "atrepo_xrpc_rate_limited_total{" not in await resp.text()


def test_settings_from_the_environment_and_toml(tmp_path: Path) -> None:
    config = load_config(
        {},
        env={"ATREPO_RATE_LIMITS": "off", "ATREPO_TRUST_PROXY": "yes", "ATREPO_RATE_LIMIT_GLOBAL": "10/1m"},
    )
    assert (config.rate_limits, config.trust_proxy) == (False, True)
    assert [(x.name, x.points, x.window_ms) for x in config.rate_rules().global_ip] == [
        ("global-ip-1m", 10, 60_000)
    ]
    toml = tmp_path / "host.toml"
    toml.write_text('rate_limits = true\nrate_limit_repo_writes = "none"\n')
    config = load_config({}, env={}, config_file=toml)
    assert config.rate_limits and config.rate_rules().keyed[REPO_WRITE_RULE] == ()
    described = load_config({}, env={}).describe()
    assert (described["rate_limits"], described["rate_limit_repo_writes"]) == (True, "5000/1h,35000/1d")
    with pytest.raises(InputFileError, match="ATREPO_RATE_LIMITS"):
        load_config({}, env={"ATREPO_RATE_LIMITS": "maybe"})
    with pytest.raises(InputFileError, match="rate limit createSession"):
        load_config({}, env={"ATREPO_RATE_LIMIT_CREATE_SESSION": "30 per minute"})


def test_serve_flag_turns_limits_off(tmp_path: Path) -> None:
    port, plc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "atrepo", "serve", "--port", str(port), "--plc-port", str(plc_port)]
    cmd += ["--data", str(tmp_path / "data"), "--no-rate-limits", "--trust-proxy"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        with urllib.request.urlopen(f"{url}/xrpc/{DESCRIBE}", timeout=5) as resp:
            assert resp.status == 200 and resp.headers.get("RateLimit-Limit") is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert "rate_limits = false" in err and "trust_proxy = true" in err
