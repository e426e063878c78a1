"""The Prometheus text registry, and the router counting what it answers."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from toy_service import DID, build_router

from atrepo.xrpc.metrics import CONTENT_TYPE, Metrics, add_metrics_route


def test_text_format() -> None:
    metrics = Metrics()
    hits = metrics.counter("app_hits_total", "Hits.\nSecond line \\ here", ("path",))
    hits.inc(labels=("/a",))
    hits.inc(2, labels=('/b"\n\\',))
    depth = metrics.gauge("app_depth", "Queue depth")
    depth.set(3)
    depth.dec(0.5)
    size = metrics.histogram("app_size_bytes", "Sizes", buckets=(10, 100))
    for v in (5, 10, 50, 1000):
        size.observe(v)
    assert metrics.render() == (
        "# HELP app_depth Queue depth\n"
        "# TYPE app_depth gauge\n"
        "app_depth 2.5\n"
        "# HELP app_hits_total Hits.\\nSecond line \\\\ here\n"
        "# TYPE app_hits_total counter\n"
        'app_hits_total{path="/a"} 1\n'
        'app_hits_total{path="/b\\"\\n\\\\"} 2\n'
        "# HELP app_size_bytes Sizes\n"
        "# TYPE app_size_bytes histogram\n"
        'app_size_bytes_bucket{le="10"} 2\n'
        'app_size_bytes_bucket{le="100"} 3\n'
        'app_size_bytes_bucket{le="+Inf"} 4\n'
        "app_size_bytes_sum 1065\n"
        "app_size_bytes_count 4\n"
    )
    assert (hits.value(("/a",)), depth.value(), size.count()) == (1, 2.5, 4)


def test_mistakes_are_refused() -> None:
    metrics = Metrics()
    metrics.counter("ok_total", "x")
    with pytest.raises(ValueError, match="already registered"):
        metrics.gauge("ok_total", "x")
    with pytest.raises(ValueError, match="invalid metric name"):
        metrics.counter("2bad", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        metrics.counter("c_total", "x", ("le",))
    with pytest.raises(ValueError, match="increasing"):
        metrics.histogram("h", "x", buckets=(5, 1))
    counter = metrics.counter("d_total", "x", ("a",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()
    with pytest.raises(ValueError, match="cannot go down"):
        counter.inc(-1, labels=("x",))
    assert metrics.histogram("h", "x", buckets=(1, math.inf)).buckets == (1.0, math.inf)


async def test_router_counts_requests(serve: Any, http: aiohttp.ClientSession) -> None:
    router, _ = build_router()
    app = router.app()
    add_metrics_route(app, router.metrics)
    base = await serve(app)
    query = {"repo": DID, "collection": "app.bsky.feed.post"}
    for _ in range(2):
        async with http.get(base + "/xrpc/com.atproto.repo.listRecords", params=query) as resp:
            assert resp.status == 200
    async with http.get(base + "/xrpc/com.atproto.repo.listRecords") as resp:
        assert resp.status == 400
    for junk in ("com.example.one", "com.example.two"):  # unknown NSIDs share one label
        async with http.get(f"{base}/xrpc/{junk}") as resp:
            assert resp.status == 501

    async with http.get(base + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        text = await resp.text()
    lines = set(text.splitlines())
    total = "atrepo_xrpc_requests_total"
    assert f'{total}{{nsid="com.atproto.repo.listRecords",method="GET",status="200"}} 2' in lines
    assert f'{total}{{nsid="com.atproto.repo.listRecords",method="GET",status="400"}} 1' in lines
    assert f'{total}{{nsid="_unknown",method="GET",status="501"}} 2' in lines
    assert "com.example.one" not in text
    duration = "atrepo_xrpc_request_duration_seconds"
    assert f'{duration}_count{{nsid="com.atproto.repo.listRecords",method="GET"}} 3' in lines
    assert "atrepo_xrpc_requests_in_flight 0" in lines


async def test_metrics_route_stands_alone(serve: Any, http: aiohttp.ClientSession) -> None:
    metrics = Metrics()
    metrics.counter("lonely_total", "x").inc()
    app = web.Application()
    add_metrics_route(app, metrics, "/internal/metrics")
    base = await serve(app)
    async with http.get(base + "/internal/metrics") as resp:
        assert "lonely_total 1" in await resp.text()
