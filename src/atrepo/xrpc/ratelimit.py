"""Rate limits: points counted in fixed windows per (limit, key), answered as the reference PDS does.

Why fixed windows: they are what the reference PDS counts with
(``rate-limiter-flexible``'s memory limiter behind ``@atproto/xrpc-server``),
so a client sees the same budget, the same ``RateLimit-*`` headers and the
same ``429 RateLimitExceeded`` from atrepo as from the reference. A window
opens at a key's first charge and lasts the limit's duration; charges add
points; a charge that takes the total past the limit is refused, and (as in
the reference) its points still count, so a client that keeps hammering stays
refused until the window ends.

Two layers, so that the arithmetic can be tested without a server:

* :class:`RateLimiter` is pure: no I/O, the clock injected, memory bounded.
  Each limit keeps its windows in insertion order, which is also expiry order
  (one duration per limit, a renewed window moves to the end), so expired
  windows are swept from the front at amortized constant cost; past
  ``max_keys`` windows the oldest is dropped, so a flood of distinct client
  addresses costs bounded memory (its price: under such a flood an evicted
  key starts afresh). Keys longer than :data:`MAX_KEY_CHARS` are hashed: a
  login identifier comes from the request body and must not be stored whole.
* :class:`HttpRateLimits` applies the limits to aiohttp requests: a middleware
  charges the per-IP global limit (and per-IP limits of single methods) before
  the router sees the request; handlers charge the limits that need their
  input (a login identifier, the writer's DID) with :meth:`HttpRateLimits.charge`.
  Every decision taken for a request is remembered on it, and the
  ``RateLimit-*`` headers of the tightest one are added when the reply is
  prepared, whatever the reply is (a success, a 429, another error).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler

from atrepo.core.errors import RateLimitExceeded

from .metrics import Metrics
from .server import error_reply

__all__ = [
    "DEFAULT_MAX_KEYS",
    "MAX_KEY_CHARS",
    "Decision",
    "HttpRateLimits",
    "Limit",
    "RateLimiter",
    "RateRules",
    "client_ip",
    "parse_limits",
    "tightest",
]

#: Windows kept per limit before the oldest is dropped: about 200 bytes each, so ~20 MB per limit at most.
DEFAULT_MAX_KEYS: Final = 100_000
#: Longer keys are replaced by their SHA-256 (hex), so a key's memory is bounded whatever the client sent.
MAX_KEY_CHARS: Final = 128
#: The reference's reply to a refused request (``ResponseType.RateLimitExceeded``'s text).
REFUSED_MESSAGE: Final = "Rate Limit Exceeded"
#: Headers browsers may read from a limited reply (as the reference's ``Access-Control-Expose-Headers``).
EXPOSED_HEADERS: Final = "RateLimit-Limit, RateLimit-Reset, RateLimit-Remaining, RateLimit-Policy"

_UNITS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*")
_NO_LIMITS: Final = frozenset({"", "none", "off"})


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """``points`` per window of ``window_ms``; ``name`` labels the metric and keeps windows apart."""

    name: str
    points: int
    window_ms: int

    def __post_init__(self) -> None:
        if self.points < 1:
            raise ValueError(f"rate limit {self.name}: points must be at least 1, not {self.points}")
        if self.window_ms < 1000 or self.window_ms % 1000:
            raise ValueError(
                f"rate limit {self.name}: the window must be whole seconds, not {self.window_ms} ms"
            )

    @property
    def policy(self) -> str:
        """The ``RateLimit-Policy`` value: ``<points>;w=<seconds>``."""
        return f"{self.points};w={self.window_ms // 1000}"


def parse_limits(base: str, spec: str) -> tuple[Limit, ...]:
    """``"30/5m,300/1d"`` as limits named ``<base>-5m``, ``<base>-1d``; ``""``/``none``/``off``: none.

    A window is a count and a unit (``s``, ``m``, ``h``, ``d``; a bare unit
    means one). Raises ``ValueError`` naming the bad part: a typo in a limit
    must stop the host at start, not leave it unprotected.
    """
    if spec.strip().lower() in _NO_LIMITS:
        return ()
    out: list[Limit] = []
    for part in spec.split(","):
        match = _SPEC.fullmatch(part)
        if match is None:
            raise ValueError(f"rate limit {base}: {part.strip()!r} is not POINTS/WINDOW (like 3000/5m)")
        points, count, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
        if count < 1:
            raise ValueError(f"rate limit {base}: the window of {part.strip()!r} is empty")
        name = f"{base}-{count}{unit}"
        if any(limit.name == name for limit in out):
            raise ValueError(f"rate limit {base}: two limits with the window {count}{unit}")
        out.append(Limit(name, points, count * _UNITS[unit]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Decision:
    """One charge against one limit: allowed or not, and what the headers report."""

    limit: Limit
    allowed: bool
    #: Points charged in the current window, this charge included (refused ones too, as the reference).
    consumed: int
    remaining: int
    #: When the window ends, on the limiter's clock (milliseconds).
    reset_ms: int
    now_ms: int

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until the window ends (``Retry-After``), at least 1 while it is open."""
        return max(1, math.ceil((self.reset_ms - self.now_ms) / 1000))

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers (``Reset`` in epoch seconds), and ``Retry-After`` if refused."""
        out = {
            "RateLimit-Limit": str(self.limit.points),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_ms // 1000),
            "RateLimit-Policy": self.limit.policy,
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


def _bounded_key(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class RateLimiter:
    """Fixed-window counters per (limit, key), in memory, with the clock injected; no I/O.

    ``clock_ms``: milliseconds (the wall clock by default, so that
    ``RateLimit-Reset`` is an epoch time). ``max_keys``: windows kept per limit.
    Not thread-safe: the host charges from its event loop only.
    """

    def __init__(self, *, clock_ms: Callable[[], int] = _wall_ms, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.clock_ms = clock_ms
        self.max_keys = max_keys
        #: Windows dropped to stay within ``max_keys`` before they expired.
        self.evicted = 0
        # limit -> key -> [window start ms, points consumed]; insertion order is start order.
        # OrderedDict, not dict: a dict emptied from the front keeps the holes, and finding its
        # first entry then costs a scan over them (tens of microseconds per charge after a flood).
        self._tables: dict[Limit, OrderedDict[str, list[int]]] = {}

    def __len__(self) -> int:
        """Windows held, all limits together."""
        return sum(len(table) for table in self._tables.values())

    def consume(self, limit: Limit, key: str, points: int = 1) -> Decision:
        """Charge ``points`` to ``key`` under ``limit`` and say whether that stays within it."""
        if points < 1:
            raise ValueError(f"a charge is at least 1 point, not {points}")
        now = self.clock_ms()
        table = self._tables.get(limit)
        if table is None:
            table = self._tables[limit] = OrderedDict()
        self._sweep(table, now, limit.window_ms)
        key = _bounded_key(key)
        window = table.get(key)
        if window is None or now >= window[0] + limit.window_ms:
            if window is not None:  # expired but not swept (the clock went back meanwhile)
                del table[key]
            while len(table) >= self.max_keys:
                table.popitem(last=False)
                self.evicted += 1
            window = table[key] = [now, 0]
        window[1] += points
        consumed = window[1]
        return Decision(
            limit=limit,
            allowed=consumed <= limit.points,
            consumed=consumed,
            remaining=max(limit.points - consumed, 0),
            reset_ms=window[0] + limit.window_ms,
            now_ms=now,
        )

    def consume_all(self, charges: Sequence[tuple[Limit, str]], points: int = 1) -> list[Decision]:
        """Charge every (limit, key), even past a refusal (as the reference's combined limiter does)."""
        return [self.consume(limit, key, points) for limit, key in charges]

    def reset(self, limit: Limit, key: str) -> None:
        """Forget ``key``'s window under ``limit``."""
        table = self._tables.get(limit)
        if table is not None:
            table.pop(_bounded_key(key), None)

    @staticmethod
    def _sweep(table: OrderedDict[str, list[int]], now: int, window_ms: int) -> None:
        """Drop expired windows from the front (the oldest first); stops at the first live one."""
        while table:
            key = next(iter(table))
            if now < table[key][0] + window_ms:
                return
            table.popitem(last=False)


def tightest(decisions: Sequence[Decision]) -> Decision | None:
    """The decision a reply reports: the first refusal, else the one with the fewest points left."""
    refused = next((d for d in decisions if not d.allowed), None)
    if refused is not None:
        return refused
    return min(decisions, key=lambda d: d.remaining, default=None)


# --- on aiohttp ------------------------------------------------------------------------------


def client_ip(request: web.Request, *, trust_proxy: bool = False) -> str:
    """The address a limit is keyed by: the socket peer, or the proxy's ``X-Forwarded-For`` entry.

    Only with ``trust_proxy`` is ``X-Forwarded-For`` read, and then only its
    last entry, the one the (single) reverse proxy in front appended: earlier
    entries come from the client and anyone can write them. An IPv4 address
    mapped into IPv6 is reported as IPv4, so one client is one key.
    """
    raw = request.remote or ""
    if trust_proxy:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        entries = [e.strip() for value in forwarded for e in value.split(",") if e.strip()]
        if entries:
            raw = entries[-1]
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True, slots=True)
class RateRules:
    """Which limits apply where.

    ``global_ip``: every XRPC request per client address, but the methods in
    ``global_exempt``. ``per_ip``: extra per-address limits of single methods,
    charged with the global one before the router runs. ``keyed``: limits a
    handler charges itself by rule name with a key of its choosing (a login
    identifier, a DID), after its input was parsed.
    """

    global_ip: tuple[Limit, ...] = ()
    per_ip: Mapping[str, tuple[Limit, ...]] = field(default_factory=dict)
    keyed: Mapping[str, tuple[Limit, ...]] = field(default_factory=dict)
    global_exempt: frozenset[str] = frozenset()

    def limits(self) -> list[Limit]:
        """Every limit, once each (for the metric's series)."""
        out: dict[str, Limit] = {}
        for group in (self.global_ip, *self.per_ip.values(), *self.keyed.values()):
            for limit in group:
                out.setdefault(limit.name, limit)
        return list(out.values())


_DECISIONS: Final = web.RequestKey("atrepo_rate_limit_decisions", list)


class HttpRateLimits:
    """The rate limits of one server: charged per request, reported in headers, refused with 429.

    ``rules=None`` disables every limit: :meth:`charge` does nothing and no
    middleware is installed (no headers either), so call sites need not ask
    whether limits are on. ``clock_ms``: the windows' clock (default: the wall
    clock; tests pass a hand-moved one).
    """

    def __init__(
        self,
        metrics: Metrics,
        rules: RateRules | None,
        *,
        trust_proxy: bool = False,
        clock_ms: Callable[[], int] | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.rules = rules
        self.trust_proxy = trust_proxy
        self.limiter = RateLimiter(clock_ms=clock_ms or _wall_ms, max_keys=max_keys)
        self._refused = metrics.counter(
            "atrepo_xrpc_rate_limited_total",
            "Requests refused with 429 RateLimitExceeded, by limit",
            ("limiter",),
        )
        for limit in rules.limits() if rules is not None else ():
            self._refused.inc(0, (limit.name,))  # every series from the start, at 0

    @property
    def enabled(self) -> bool:
        return self.rules is not None

    def client_ip(self, request: web.Request) -> str:
        return client_ip(request, trust_proxy=self.trust_proxy)

    def charge(self, request: web.Request, rule: str, key: str, points: int = 1) -> None:
        """Charge ``points`` to ``key`` under the limits of ``rule``; raise ``RateLimitExceeded`` past one.

        The decisions are remembered on the request for its reply's headers. A
        rule with no limits (or limits off, or fewer than 1 point, as the
        reference) charges nothing.
        """
        if self.rules is None or points < 1:
            return
        limits = self.rules.keyed.get(rule, ())
        if limits:
            self._apply(request, [(limit, key) for limit in limits], points)

    def _apply(self, request: web.Request, charges: Sequence[tuple[Limit, str]], points: int) -> None:
        decisions = self.limiter.consume_all(charges, points)
        recorded = request.get(_DECISIONS)
        if recorded is None:
            recorded = request[_DECISIONS] = []
        recorded.extend(decisions)
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is not None:
            self._refused.inc(labels=(refused.limit.name,))
            raise RateLimitExceeded(REFUSED_MESSAGE)

    def install(self, app: web.Application) -> None:
        """Add the middleware (global and per-IP limits) and the header hook to ``app``.

        Install after the XRPC router's setup: CORS preflights are then answered
        by the router's middleware before this one, and never counted.
        """
        if self.rules is None:
            return
        app.middlewares.append(self._middleware)
        app.on_response_prepare.append(_send_headers)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        rules = self.rules
        path = request.path
        if rules is None or not path.startswith("/xrpc/"):
            return await handler(request)
        nsid = path[len("/xrpc/") :].rstrip("/")
        if not nsid or nsid.startswith("_"):  # /xrpc/_health: probes are not clients
            return await handler(request)
        charges: list[tuple[Limit, str]] = []
        ip = self.client_ip(request)
        if nsid not in rules.global_exempt:
            charges.extend((limit, ip) for limit in rules.global_ip)
        charges.extend((limit, ip) for limit in rules.per_ip.get(nsid, ()))
        if charges:
            try:
                self._apply(request, charges, 1)
            except RateLimitExceeded as exc:
                # Refused before the router: build its reply the router's way (one error mapping).
                status, body = error_reply(exc)
                return web.Response(
                    status=status,
                    body=json.dumps(body, separators=(",", ":")).encode(),
                    content_type="application/json",
                    charset="utf-8",
                )
        return await handler(request)


async def _send_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add the ``RateLimit-*`` headers of the request's tightest decision to its reply."""
    decision = tightest(request.get(_DECISIONS) or ())
    if decision is None:
        return
    response.headers.update(decision.headers())
    exposed = EXPOSED_HEADERS + (", Retry-After" if not decision.allowed else "")
    response.headers["Access-Control-Expose-Headers"] = exposed
