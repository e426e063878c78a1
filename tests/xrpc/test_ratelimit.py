"""The pure rate limiter: fixed windows, headers, memory bounds; and client addresses behind a proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.xrpc.metrics import Metrics
from atrepo.xrpc.ratelimit import (
    MAX_KEY_CHARS,
    HttpRateLimits,
    Limit,
    RateLimiter,
    RateRules,
    client_ip,
    parse_limits,
    tightest,
)
from conftest import Serve


@dataclass
class Clock:
    ms: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def test_parse_limits() -> None:
    assert parse_limits("global-ip", "3000/5m") == (Limit("global-ip-5m", 3000, 300_000),)
    assert parse_limits("s", " 30/5m , 300/1d ") == (
        Limit("s-5m", 30, 300_000),
        Limit("s-1d", 300, 86_400_000),
    )
    assert parse_limits("w", "5000/h") == (Limit("w-1h", 5000, 3_600_000),)
    assert parse_limits("x", "10/30s")[0].policy == "10;w=30"
    for off in ("", "none", "OFF"):
        assert parse_limits("x", off) == ()
    for bad in ("3000", "3000/5", "0/5m", "1/0m", "abc/5m", "1/5m,2/5m", "1/5w"):
        with pytest.raises(ValueError, match="rate limit x"):
            parse_limits("x", bad)


def test_fixed_window_counts_refused_points_and_resets() -> None:
    clock = Clock()
    limiter = RateLimiter(clock_ms=clock)
    limit = Limit("t-1m", 5, 60_000)
    start = clock.ms
    got = [limiter.consume(limit, "a", 2) for _ in range(3)]
    assert [d.allowed for d in got] == [True, True, False]
    assert [d.remaining for d in got] == [3, 1, 0]
    assert got[2].consumed == 6  # refused points still count, as the reference's limiter
    assert all(d.reset_ms == start + 60_000 for d in got)
    clock.ms += 59_999
    refused = limiter.consume(limit, "a")
    assert not refused.allowed and refused.retry_after_s == 1
    assert limiter.consume(limit, "b").allowed  # another key has its own window
    clock.ms += 1  # the window of "a" ends: a new one opens at its next charge
    fresh = limiter.consume(limit, "a", 5)
    assert fresh.allowed and fresh.remaining == 0 and fresh.reset_ms == clock.ms + 60_000
    assert not limiter.consume(limit, "a").allowed


def test_headers_as_the_reference_sends_them() -> None:
    clock = Clock(ms=1_000_000_500)
    limiter = RateLimiter(clock_ms=clock)
    limit = Limit("t-5m", 2, 300_000)
    ok = limiter.consume(limit, "k")
    assert ok.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": str((1_000_000_500 + 300_000) // 1000),
        "RateLimit-Policy": "2;w=300",
    }
    limiter.consume(limit, "k")
    clock.ms += 100_000
    refused = limiter.consume(limit, "k").headers()
    assert refused["RateLimit-Remaining"] == "0" and refused["Retry-After"] == "200"


def test_tightest_prefers_a_refusal_then_the_fewest_points_left() -> None:
    limiter = RateLimiter(clock_ms=Clock())
    hour, day = Limit("w-1h", 10, 3_600_000), Limit("w-1d", 12, 86_400_000)
    first = limiter.consume_all([(hour, "d"), (day, "d")], 3)
    assert tightest(first) is first[0]  # 7 left of the hour, 9 of the day
    limiter.consume(day, "d", 8)
    second = limiter.consume_all([(hour, "d"), (day, "d")], 2)
    assert tightest(second) is second[1] and not second[1].allowed
    assert tightest([]) is None


def test_memory_is_bounded_and_expired_windows_go() -> None:
    clock = Clock()
    limiter = RateLimiter(clock_ms=clock, max_keys=100)
    limit = Limit("ip-1m", 1, 60_000)
    for i in range(1000):  # a flood of distinct addresses
        limiter.consume(limit, f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100 and limiter.evicted == 900
    # the newest keys are the ones kept
    assert not limiter.consume(limit, "10.0.3.231").allowed
    clock.ms += 60_000
    limiter.consume(limit, "late")
    assert len(limiter) == 1  # everything older than a window was swept at that charge
    long_key = "x" * (MAX_KEY_CHARS * 1000)
    limiter.consume(limit, long_key)
    assert not limiter.consume(limit, long_key).allowed  # hashed, still one key
    limiter.reset(limit, long_key)
    assert limiter.consume(limit, long_key).allowed


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(max_keys=0)
    with pytest.raises(ValueError):
        RateLimiter().consume(Limit("x-1s", 1, 1000), "k", 0)
    with pytest.raises(ValueError):
        Limit("x", 1, 1500)


_charges = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40_000),  # ms to advance first
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(min_value=1, max_value=7),
        st.booleans(),  # which of two limits
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(charges=_charges, max_keys=st.integers(min_value=1, max_value=6))
def test_property_matches_a_plain_model_and_stays_bounded(
    charges: list[tuple[int, str, int, bool]], max_keys: int
) -> None:
    """As an unbounded model until a key is evicted; never over a limit; always bounded."""
    clock = Clock()
    limits = (Limit("p-1m", 10, 60_000), Limit("p-90s", 25, 90_000))
    limiter = RateLimiter(clock_ms=clock, max_keys=max_keys)
    model: dict[tuple[str, str], list[int]] = {}
    allowed_in_window: dict[tuple[str, str, int], int] = {}
    for advance, key, points, which in charges:
        clock.ms += advance
        limit = limits[which]
        d = limiter.consume(limit, key, points)
        window = model.get((limit.name, key))
        if window is None or clock.ms >= window[0] + limit.window_ms:
            window = model[(limit.name, key)] = [clock.ms, 0]
        window[1] += points
        assert d.remaining == max(limit.points - d.consumed, 0)
        assert clock.ms < d.reset_ms <= clock.ms + limit.window_ms
        assert len(limiter) <= max_keys * len(limits)
        if limiter.evicted:
            # Past the cap an evicted key starts afresh (the documented price of bounded memory):
            # from then on only the bounds above hold.
            continue
        assert d.allowed == (window[1] <= limit.points)
        assert d.consumed == window[1] and d.reset_ms == window[0] + limit.window_ms
        if d.allowed:
            slot = (limit.name, key, d.reset_ms)
            allowed_in_window[slot] = allowed_in_window.get(slot, 0) + points
            assert allowed_in_window[slot] <= limit.points  # a window never lets more through


# --- addresses, and the HTTP glue on a real server --------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def _echo_ip_server(serve: Serve, *, trust_proxy: bool) -> str:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=client_ip(request, trust_proxy=trust_proxy))

    app = web.Application()
    app.router.add_get("/ip", handle)
    return await serve(app)


async def test_client_ip_ignores_forwarded_for_unless_trusted(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    base = await _echo_ip_server(serve, trust_proxy=False)
    async with http.get(f"{base}/ip", headers=spoof) as resp:
        assert await resp.text() == "127.0.0.1"
    base = await _echo_ip_server(serve, trust_proxy=True)
    async with http.get(f"{base}/ip", headers=spoof) as resp:
        assert await resp.text() == "203.0.113.9"  # the entry our proxy appended, not the client's
    async with http.get(f"{base}/ip", headers={"X-Forwarded-For": "::ffff:198.51.100.7"}) as resp:
        assert await resp.text() == "198.51.100.7"
    async with http.get(f"{base}/ip") as resp:
        assert await resp.text() == "127.0.0.1"


async def test_middleware_refuses_with_429_and_headers(serve: Serve, http: aiohttp.ClientSession) -> None:
    metrics = Metrics()
    clock = Clock()
    rules = RateRules(global_ip=(Limit("g-1m", 2, 60_000),), global_exempt=frozenset({"exempt.call"}))
    limits = HttpRateLimits(metrics, rules, clock_ms=clock)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/xrpc/{tail:.*}", ok)
    app.router.add_get("/other", ok)
    limits.install(app)
    base = await serve(app)
    for remaining in ("1", "0"):
        async with http.get(f"{base}/xrpc/some.call") as resp:
            assert resp.status == 200 and resp.headers["RateLimit-Remaining"] == remaining
            assert resp.headers["RateLimit-Policy"] == "2;w=60"
    async with http.get(f"{base}/xrpc/some.call") as resp:
        assert resp.status == 429
        assert await resp.json() == {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        assert resp.headers["Retry-After"] == "60" and resp.headers["RateLimit-Limit"] == "2"
    for path in ("/xrpc/exempt.call", "/xrpc/_health", "/other"):
        async with http.get(f"{base}{path}") as resp:
            assert resp.status == 200 and "RateLimit-Limit" not in resp.headers
    assert 'atrepo_xrpc_rate_limited_total{limiter="g-1m"} 1' in metrics.render()
    clock.ms += 60_000
    async with http.get(f"{base}/xrpc/some.call") as resp:
        assert resp.status == 200 and resp.headers["RateLimit-Remaining"] == "1"


async def test_disabled_limits_install_nothing() -> None:
    app = web.Application()
    limits = HttpRateLimits(Metrics(), None)
    limits.install(app)
    assert not limits.enabled and len(app.middlewares) == 0
