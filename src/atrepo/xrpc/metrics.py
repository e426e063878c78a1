"""A tiny Prometheus registry: counters, gauges, histograms, rendered in the text format.

Why not ``prometheus-client``: the servers need a handful of metrics with a few
labels each, and this is about 200 lines with no dependency and no global state
(each server, and each test, owns its registry). The output follows the text
exposition format 0.0.4, which every scraper reads.

Label values are the caller's responsibility: never put unbounded values
(DIDs, unknown NSIDs from the request line) in a label; the XRPC router maps
unknown methods to a fixed placeholder for that reason.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "add_metrics_route",
    "metrics_handler",
]

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets in seconds (Prometheus client defaults, which suit request latencies).
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    """Common parts: a name, help text, label names, one lock for its children."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {name}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        # Metrics are updated from the event loop and from worker threads.
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(values)} values")
        return tuple(str(v) for v in values)

    def _header(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"

    def render(self) -> Iterator[str]:
        raise NotImplementedError


class _Values(_Metric):
    """One number per label set: what counters and gauges share (storage, reads, rendering)."""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def _add(self, amount: float, labels: Sequence[str]) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: Sequence[str] = ()) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> Iterator[str]:
        yield from self._header()
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            yield f"{self.name}{_labels(self.labelnames, key)} {_number(value)}"


class Counter(_Values):
    """A value that only goes up (requests served, bytes received)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot go down")
        self._add(amount, labels)


class Gauge(_Values):
    """A value that goes up and down (requests in flight, open subscriptions)."""

    kind = "gauge"

    def set(self, value: float, labels: Sequence[str] = ()) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        self._add(amount, labels)

    def dec(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        self._add(-amount, labels)


class Histogram(_Metric):
    """Observations counted into fixed buckets, with their sum and count (latencies, sizes)."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"histogram {name} needs increasing, distinct buckets")
        self.buckets = (*bounds, math.inf)
        # per label set: [count per bucket (not cumulative)..., sum]
        self._values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, labels: Sequence[str] = ()) -> None:
        key = self._key(labels)
        index = next(i for i, bound in enumerate(self.buckets) if value <= bound or math.isinf(bound))
        with self._lock:
            row = self._values.get(key)
            if row is None:
                row = self._values[key] = [0.0] * (len(self.buckets) + 1)
            row[index] += 1
            row[-1] += value

    def count(self, labels: Sequence[str] = ()) -> int:
        row = self._values.get(self._key(labels))
        return 0 if row is None else int(sum(row[:-1]))

    def render(self) -> Iterator[str]:
        yield from self._header()
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._values.items())
        for key, row in items:
            running = 0.0
            for bound, n in zip(self.buckets, row[:-1], strict=True):
                running += n
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.labelnames, key, le)} {_number(running)}"
            yield f"{self.name}_sum{_labels(self.labelnames, key)} {_number(row[-1])}"
            yield f"{self.name}_count{_labels(self.labelnames, key)} {_number(running)}"


_M = TypeVar("_M", bound="_Metric")


class Metrics:
    """A set of metrics with unique names, rendered together for ``/metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> None:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric

    def register(self, metric: _M) -> _M:
        """Add a metric built elsewhere (e.g. a gauge sampled from live state at each scrape)."""
        self._add(metric)
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help, labelnames)
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help, labelnames)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        metric = Histogram(name, help, labelnames, buckets)
        self._add(metric)
        return metric

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def render(self) -> str:
        """Every metric in the text exposition format, sorted by name."""
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines = [line for metric in metrics for line in metric.render()]
        return "\n".join(lines) + "\n" if lines else ""


def metrics_handler(metrics: Metrics) -> AiohttpHandler:
    """An aiohttp handler answering with ``metrics`` in the text format."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=metrics.render().encode())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    return handle


def add_metrics_route(app: web.Application, metrics: Metrics, path: str = "/metrics") -> None:
    """Serve ``metrics`` at ``GET path`` (the host and relay mount it beside their XRPC routes)."""
    app.router.add_get(path, metrics_handler(metrics), allow_head=True)
