"""An XRPC router on aiohttp: routes declared by NSID, checked against their lexicons.

A service declares each method by NSID; the router looks the NSID up in a
lexicon registry at declaration time, so a typo, a record NSID or a handler of
the wrong kind fails at start-up, not on the first request. Per request it
then does, in the reference order (``@atproto/xrpc-server``): HTTP method,
parameters (typed, defaulted, validated by the lexicon), authentication (a
per-route hook, before any body is read), the body (presence, ``Content-Type``,
size limit, JSON schema), the handler, and the reply.

Every failure is turned into a reply in one place (:func:`error_reply`): an
:class:`AtrepoError` answers with its own status and ``{"error", "message"}``;
anything else is a 500 ``InternalServerError`` whose traceback goes to the log,
never to the client. Subscriptions use the same mapping for the error frame
they send before closing.

Bodies: JSON inputs are read whole up to the route's limit (150 KiB unless the
route raises it); any other encoding (``uploadBlob``'s ``*/*``,
``importRepo``'s CAR) is handed to the handler as a :class:`RawBody` stream,
limited as it is read, so a large upload never sits in memory because of the
router. Over a limit is 413 ``PayloadTooLarge``.

Replies: a handler returns a data-model value (a ``dict``; sent as JSON with
``$link``/``$bytes``), ``None`` (an empty 200), a :class:`RawOutput` (bytes or
an async stream with a content type), or, as an escape hatch (redirects), an
aiohttp response. With ``validate_output=True`` (tests, development) replies
are checked against the lexicon and a bad one is a 500.

Delegation: a service that hands some calls to another one (a PDS proxying
to an AppView) registers one :data:`Delegate` with :meth:`XrpcRouter.delegate`;
it is offered each query and procedure call before local routing and either
returns a :class:`ForwardedReply` (relayed as is, any status) or declines. The
router knows nothing of why; the decision is the delegate's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from aiohttp import StreamReader, WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler as AiohttpHandler

import atrepo
from atrepo.core import datamodel
from atrepo.core.errors import (
    AtrepoError,
    InternalServerError,
    InvalidLexiconData,
    InvalidRequest,
    MethodNotImplemented,
    PayloadTooLarge,
    StoreUnavailable,
    UpgradeRequired,
)
from atrepo.core.events import encode_error_frame
from atrepo.core.lexicon import Registry
from atrepo.core.lexicon.compile import blob_accepts
from atrepo.core.lexicon.schema import Procedure, Query, Subscription
from atrepo.core.lexicon.xrpc import JSON_BODY_LIMIT, Endpoint, endpoint
from atrepo.lexicons import builtin_registry

from .metrics import Metrics

__all__ = [
    "JSON_BODY_LIMIT",
    "RAW_BODY_LIMIT",
    "AuthVerifier",
    "Delegate",
    "ForwardedReply",
    "Handler",
    "RawBody",
    "RawOutput",
    "SubscriptionContext",
    "SubscriptionHandler",
    "XrpcContext",
    "XrpcRouter",
    "bind_listener",
    "enable_cors",
    "error_reply",
    "health_reply",
]

log = logging.getLogger("atrepo.xrpc")
access_log = logging.getLogger("atrepo.xrpc.access")

#: Default limit of a streamed (non-JSON) body: the reference PDS's default
#: ``blobUploadLimit`` (5 MiB). Routes set their own (``importRepo``: the import size).
RAW_BODY_LIMIT: Final = 5 * 1024 * 1024

#: Largest message a subscriber may send us. Streams are server-to-client only;
#: anything a client sends is ignored, so there is no reason to buffer much of it.
SUBSCRIPTION_INBOUND_LIMIT: Final = 64 * 1024

#: CORS as the reference PDS sends it (the ``cors`` package with ``maxAge`` one day).
CORS_ALLOW_METHODS: Final = "GET,HEAD,PUT,PATCH,POST,DELETE"
CORS_MAX_AGE: Final = "86400"

_INTERNAL_MESSAGE: Final = "Internal Server Error"
_JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
# The reference's path rule (``extractUrlNsid``): alphanumerics joined by '.' or '-',
# an optional trailing '/'.
_XRPC_PATH = re.compile(r"([A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*)/?")
_METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CORS_ENABLED: Final = web.AppKey("atrepo_xrpc_cors", bool)


# --- what handlers see and return --------------------------------------------------------


class RawBody:
    """A request body handed to the handler as a stream, counted against the route's limit.

    Iterate it (``async for chunk in ctx.body``) or ``await read()`` it; either
    raises :class:`PayloadTooLarge` as soon as more than ``limit`` bytes have
    arrived, whatever ``Content-Length`` claimed. Bytes are counted after the
    server undid any ``Content-Encoding``, so a compressed bomb is stopped too.
    """

    def __init__(
        self,
        stream: StreamReader,
        *,
        limit: int,
        content_type: str,
        length: int | None,
        identity: bool = False,
    ) -> None:
        self._stream = stream
        #: No ``Content-Encoding``: the bytes read are the bytes declared.
        self._identity = identity
        self.limit = limit
        #: The bare MIME type the client sent (``image/png``).
        self.content_type = content_type
        #: ``Content-Length`` as declared, if it was.
        self.length = length
        #: Bytes read so far.
        self.received = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await self._stream.readany()
            except (ConnectionError, HttpProcessingError) as exc:
                # A body cut short (the client went away, broken chunking) is the
                # client's failure, not ours: a 400 it will likely never read.
                raise InvalidRequest(
                    f"incomplete request body after {self.received} bytes: {exc}", rule="body"
                ) from None
            if not chunk:
                return
            self.received += len(chunk)
            if self.received > self.limit:
                raise PayloadTooLarge(f"request entity too large: more than {self.limit} bytes")
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def read(self) -> bytes:
        """The whole body (bounded by the limit): for handlers that need it all anyway."""
        if self.length and self.length <= self.limit and self._identity:
            # Declared and not compressed: the length is the body's, so read it in one call.
            try:
                data = await self._stream.readexactly(self.length)
            except (asyncio.IncompleteReadError, ConnectionError, HttpProcessingError) as exc:
                raise InvalidRequest(
                    f"incomplete request body: {self.length} bytes declared: {exc}", rule="body"
                ) from None
            self.received = len(data)
            return data
        return b"".join([chunk async for chunk in self.chunks()])


@dataclass(frozen=True, slots=True)
class RawOutput:
    """A reply that is not JSON: bytes or an async stream of them, with its content type.

    ``length`` sets ``Content-Length`` for a stream (bytes get it anyway).
    """

    content_type: str
    body: bytes | AsyncIterable[bytes]
    length: int | None = None


@dataclass(slots=True)
class XrpcContext:
    """One query or procedure call, as its handler sees it."""

    request: web.Request
    nsid: str
    #: Parameters typed, defaulted and validated by the lexicon.
    params: dict[str, Any]
    #: What the route's auth hook returned (``None`` without one).
    auth: Any = None
    #: A JSON body: a validated data-model value with defaults applied.
    input: Any = None
    #: A non-JSON body, streamed.
    body: RawBody | None = None
    #: The bare MIME type of the request body, when there is one.
    encoding: str | None = None
    #: Headers set on the reply, whatever it is (``Atproto-Repo-Rev``, ``Cache-Control``);
    #: they replace the router's own of the same name.
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SubscriptionContext:
    """One subscription, upgraded: the handler writes frames to ``ws`` until it returns."""

    request: web.Request
    nsid: str
    params: dict[str, Any]
    ws: web.WebSocketResponse
    auth: Any = None


@dataclass(frozen=True, slots=True)
class ForwardedReply:
    """A reply relayed from another service: its status, headers and body, sent as they are.

    What a :data:`Delegate` returns. Unlike a handler's reply it is not checked
    against any lexicon (the other service answers for it) and may carry any
    status, errors included. ``body`` may be a stream, written as it arrives.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes | AsyncIterable[bytes] = b""


Handler = Callable[[XrpcContext], Awaitable[Any]]
SubscriptionHandler = Callable[[SubscriptionContext], Awaitable[None]]
#: Called with the request and its parsed parameters, before any body is read; returns the
#: credentials (kept in ``ctx.auth``) or raises (``AuthMissing``, ``InvalidToken``, ...).
AuthVerifier = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]

#: Offered every query and procedure call before local routing: called with the request, its
#: NSID and whether a local route serves it; returns the reply to send instead, or None to
#: let the router go on as if it were not there. See :meth:`XrpcRouter.delegate`.
Delegate = Callable[[web.Request, str, bool], Awaitable[ForwardedReply | None]]

_H = TypeVar("_H", bound=Handler)
_S = TypeVar("_S", bound=SubscriptionHandler)


# --- the one error mapping ---------------------------------------------------------------


def error_reply(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The status and ``{"error", "message"}`` body answering ``exc``: the only mapping there is.

    A 500's message is always "Internal Server Error" (as the reference), whether
    the error was raised on purpose or not: details go to the log.
    """
    if isinstance(exc, AtrepoError):
        status, body = exc.to_xrpc()
        if status == 500:
            return 500, {"error": str(body["error"]), "message": _INTERNAL_MESSAGE}
        return status, {"error": str(body["error"]), "message": str(body["message"])}
    return 500, {"error": "InternalServerError", "message": _INTERNAL_MESSAGE}


async def health_reply(version: str, check: Callable[[], Awaitable[None]] | None) -> web.Response:
    """The answer of ``/xrpc/_health``: 200 with the version, or 503 once ``check`` raises.

    One answer for every server, routed by an :class:`XrpcRouter` or not (the
    sync consumer mounts it on its own application). A store that cannot be
    reached is an expected outage, logged in one line; anything else with its
    traceback.
    """
    if check is not None:
        try:
            await check()
        except StoreUnavailable as exc:
            log.warning("failed health check: %s", exc)
            return _json_response(503, {"version": version, "error": "Service Unavailable"})
        except Exception:
            log.exception("failed health check")
            return _json_response(503, {"version": version, "error": "Service Unavailable"})
    return _json_response(200, {"version": version})


#: Made once: ``json.dumps`` with options builds a new encoder on every call.
_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_response(status: int, body: Any) -> web.Response:
    data = _JSON_ENCODER.encode(body).encode()
    response = web.Response(status=status, body=data)
    response.headers["Content-Type"] = _JSON_CONTENT_TYPE
    return response


# --- CORS --------------------------------------------------------------------------------


@web.middleware
async def _cors_preflight(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
    if request.method != "OPTIONS":
        return await handler(request)
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        response.headers["Access-Control-Allow-Headers"] = asked
        response.headers["Vary"] = "Access-Control-Request-Headers"
    response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return response


async def _cors_origin(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Access-Control-Allow-Origin", "*")


def enable_cors(app: web.Application) -> None:
    """Answer CORS as the reference PDS does, on every path of ``app`` (idempotent).

    Every reply gets ``Access-Control-Allow-Origin: *``; any ``OPTIONS`` request
    is a preflight answered 204 with the allowed methods, the requested headers
    reflected, and a one-day ``Access-Control-Max-Age``.
    """
    if app.get(_CORS_ENABLED):
        return
    app[_CORS_ENABLED] = True
    app.middlewares.append(_cors_preflight)
    app.on_response_prepare.append(_cors_origin)


# --- routes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    nsid: str
    endpoint: Endpoint
    handler: Callable[[Any], Awaitable[Any]]
    auth: AuthVerifier | None
    json_input: bool
    json_limit: int
    raw_limit: int
    heartbeat: float | None


@dataclass(slots=True)
class _Call:
    """Bookkeeping of one request for the log and the metrics."""

    method: str
    nsid: str = "-"
    label: str = "_invalid"
    #: The reply has started (headers sent, or upgraded): no error reply can follow.
    prepared: bool = False
    status: int = 500


class XrpcRouter:
    """XRPC methods by NSID, served under ``/xrpc/`` of an aiohttp application.

    ``registry``: the lexicons routes are declared from (default: the shipped
    set). ``validate_output``: check every reply against its lexicon (a bad one
    is a 500); for tests and development, as the reference's dev mode.
    ``json_limit``/``raw_limit``: defaults for routes that set none.
    ``health_check``: awaited by ``/xrpc/_health``; if it raises, the answer is
    503 (a database that stopped answering, say).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        validate_output: bool = False,
        json_limit: int = JSON_BODY_LIMIT,
        raw_limit: int = RAW_BODY_LIMIT,
        metrics: Metrics | None = None,
        version: str = atrepo.__version__,
        health_check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else builtin_registry()
        self.validate_output = validate_output
        self.json_limit = _positive("json_limit", json_limit)
        self.raw_limit = _positive("raw_limit", raw_limit)
        self.version = version
        self.health_check = health_check
        self.metrics = metrics if metrics is not None else Metrics()
        self._requests = self.metrics.counter(
            "atrepo_xrpc_requests_total",
            "XRPC requests answered, by method NSID, HTTP method and status",
            ("nsid", "method", "status"),
        )
        self._latency = self.metrics.histogram(
            "atrepo_xrpc_request_duration_seconds",
            "Time from request to the end of the reply (subscriptions: connection lifetime)",
            ("nsid", "method"),
        )
        self._in_flight = self.metrics.gauge(
            "atrepo_xrpc_requests_in_flight", "XRPC requests being answered (open subscriptions included)"
        )
        self._routes: dict[str, _Route] = {}
        #: NSID namespace -> the message of the 501 for methods of it that have no route.
        self._unserved: dict[str, str] = {}
        self._delegate: Delegate | None = None

    # --- declaring routes --------------------------------------------------------------

    def add(
        self,
        nsid: str,
        handler: Handler | SubscriptionHandler,
        *,
        auth: AuthVerifier | None = None,
        json_limit: int | None = None,
        raw_limit: int | None = None,
        heartbeat: float | None = None,
    ) -> None:
        """Serve ``nsid`` with ``handler``; its kind (query, procedure, subscription) comes from the lexicon.

        Raises :class:`LexiconNotFound` for an NSID the registry lacks or that is
        not an XRPC method, ``ValueError`` for a second handler of the same NSID
        or a limit that cannot apply to it.
        """
        ep = endpoint(self.registry, nsid)
        if nsid in self._routes:
            raise ValueError(f"{nsid} already has a handler")
        body = ep.input
        json_input = body is not None and body.encoding == "application/json"
        if json_limit is not None and not json_input:
            raise ValueError(f"{nsid} takes no JSON body; json_limit does not apply")
        if raw_limit is not None and (body is None or json_input):
            raise ValueError(f"{nsid} takes no raw body; raw_limit does not apply")
        if heartbeat is not None and ep.kind != "subscription":
            raise ValueError(f"{nsid} is a {ep.kind}; heartbeat applies to subscriptions")
        self._routes[nsid] = _Route(
            nsid=nsid,
            endpoint=ep,
            handler=handler,
            auth=auth,
            json_input=json_input,
            json_limit=_positive("json_limit", json_limit) if json_limit is not None else self.json_limit,
            raw_limit=_positive("raw_limit", raw_limit) if raw_limit is not None else self.raw_limit,
            heartbeat=heartbeat,
        )

    def _declare(self, kind: str, nsid: str) -> None:
        actual = endpoint(self.registry, nsid).kind
        if actual != kind:
            raise ValueError(f"{nsid} is a {actual}, not a {kind}")

    def query(self, nsid: str, *, auth: AuthVerifier | None = None) -> Callable[[_H], _H]:
        """Decorator: ``@router.query("com.atproto.repo.listRecords")``."""
        self._declare("query", nsid)

        def register(handler: _H) -> _H:
            self.add(nsid, handler, auth=auth)
            return handler

        return register

    def procedure(
        self,
        nsid: str,
        *,
        auth: AuthVerifier | None = None,
        json_limit: int | None = None,
        raw_limit: int | None = None,
    ) -> Callable[[_H], _H]:
        """Decorator: ``@router.procedure("com.atproto.repo.createRecord", json_limit=1_000_000)``."""
        self._declare("procedure", nsid)

        def register(handler: _H) -> _H:
            self.add(nsid, handler, auth=auth, json_limit=json_limit, raw_limit=raw_limit)
            return handler

        return register

    def subscription(
        self, nsid: str, *, auth: AuthVerifier | None = None, heartbeat: float | None = None
    ) -> Callable[[_S], _S]:
        """Decorator: ``@router.subscription("com.atproto.sync.subscribeRepos")``."""
        self._declare("subscription", nsid)

        def register(handler: _S) -> _S:
            self.add(nsid, handler, auth=auth, heartbeat=heartbeat)
            return handler

        return register

    def explain_unserved(self, namespace: str, message: str) -> None:
        """Answer methods under ``namespace`` that have no route with ``message`` (still 501).

        The default "Method Not Implemented" does not say why; a host that leaves
        a whole namespace to another service (``app.*`` to an AppView) says so.
        The longest matching namespace wins.
        """
        self._unserved[namespace] = message

    def _unserved_message(self, nsid: str) -> str:
        best = ""
        for namespace in self._unserved:
            if (nsid == namespace or nsid.startswith(namespace + ".")) and len(namespace) > len(best):
                best = namespace
        return self._unserved[best] if best else "Method Not Implemented"

    def delegate(self, handler: Delegate | None) -> None:
        """Offer calls to ``handler`` before the local routes (None removes it).

        This is how a service hands calls to another one (a host proxying to an
        AppView) without the router knowing which or why: ``handler(request,
        nsid, served)`` sees every query and procedure call (not subscriptions,
        not ``_health``) once its path names a valid NSID and, for a method the
        router has no route for, once the HTTP method was checked against the
        lexicons. It returns a :class:`ForwardedReply` to send instead, or None
        to decline: the local route answers, or the usual 501. It may raise any
        error, answered as a handler's would be. It must not read the body of a
        call it declines.
        """
        self._delegate = handler

    @property
    def nsids(self) -> list[str]:
        """The NSIDs served, sorted."""
        return sorted(self._routes)

    # --- mounting ------------------------------------------------------------------------

    def setup(self, app: web.Application, *, cors: bool = True) -> None:
        """Mount the router on ``app`` under ``/xrpc/`` (and CORS on all of ``app`` unless told not to)."""
        app.router.add_route("*", "/xrpc/{tail:.*}", self._dispatch)
        if cors:
            enable_cors(app)

    def app(self, *, cors: bool = True) -> web.Application:
        """A new application serving this router alone."""
        app = web.Application()
        self.setup(app, cors=cors)
        return app

    # --- serving -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        call = _Call(method=request.method if request.method in _METHOD_LABELS else "OTHER")
        self._in_flight.inc()
        try:
            response = await self._serve(request, call)
            call.status = response.status
            return response
        except Exception as exc:
            if call.prepared:  # the reply has started: cut the connection rather than end it cleanly
                self._log_failure(exc, call.nsid, 500)
                raise
            response = self._error_response(exc, call.nsid)
            call.status = response.status
            return response
        except BaseException:  # cancelled (shutdown): no reply was made
            call.status = 499
            raise
        finally:
            self._in_flight.dec()
            # Counted and logged on the loop's next turn: the reply this step hands
            # back to aiohttp is written first, so neither is on the client's wait.
            asyncio.get_running_loop().call_soon(
                self._account, request.method, call, time.perf_counter() - started
            )

    def _account(self, method: str, call: _Call, elapsed: float) -> None:
        """The metrics and access-log line of one finished call."""
        self._requests.inc(labels=(call.label, call.method, str(call.status)))
        self._latency.observe(elapsed, labels=(call.label, call.method))
        access_log.info("%s %s %d %.1fms", method, call.nsid, call.status, elapsed * 1000)

    async def _serve(self, request: web.Request, call: _Call) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if tail in ("_health", "_health/"):
            call.nsid = call.label = "_health"
            return await self._health(request)
        match = _XRPC_PATH.fullmatch(tail)
        if match is None:
            raise InvalidRequest("invalid xrpc path")
        nsid = call.nsid = match.group(1)
        route = self._routes.get(nsid)
        if self._delegate is not None and (route is None or route.endpoint.kind != "subscription"):
            if route is None:
                self._check_method_of_unserved(nsid, request.method)
            forwarded = await self._delegate(request, nsid, route is not None)
            if forwarded is not None:
                call.label = nsid if nsid in self.registry else "_unknown"
                return await self._forward(request, forwarded, call)
        if route is None:
            call.label = nsid if nsid in self.registry else "_unknown"
            self._check_method_of_unserved(nsid, request.method)
            raise MethodNotImplemented(self._unserved_message(nsid))
        call.label = nsid
        if route.endpoint.kind == "subscription":
            return await self._serve_subscription(route, request, call)
        return await self._serve_method(route, request, call)

    @staticmethod
    async def _forward(request: web.Request, reply: ForwardedReply, call: _Call) -> web.StreamResponse:
        """Send a delegate's reply; a stream failing midway cuts the connection, as a handler's does."""
        if isinstance(reply.body, bytes | bytearray | memoryview):
            response = web.Response(status=reply.status, body=bytes(reply.body))
            response.headers.update(reply.headers)
            return response
        stream = web.StreamResponse(status=reply.status)
        stream.headers.update(reply.headers)
        try:
            call.prepared = True
            await stream.prepare(request)
            if request.method != "HEAD":
                async for chunk in reply.body:
                    await stream.write(chunk)
            await stream.write_eof()
        finally:
            # HEAD, a client gone midway: the source is closed either way (its connection released)
            if isinstance(reply.body, AsyncGenerator):
                await reply.body.aclose()
        return stream

    def _check_method_of_unserved(self, nsid: str, method: str) -> None:
        """A method the lexicons know but we don't serve still gets the method check (as the reference)."""
        try:
            d = self.registry.get_def(nsid)
        except AtrepoError:
            return
        if isinstance(d, Query | Procedure | Subscription):
            _check_method(method, "POST" if isinstance(d, Procedure) else "GET")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise InvalidRequest(f"Incorrect HTTP method ({request.method}) expected GET", rule="method")
        return await health_reply(self.version, self.health_check)

    async def _serve_method(self, route: _Route, request: web.Request, call: _Call) -> web.StreamResponse:
        ep = route.endpoint
        _check_method(request.method, ep.http_method)
        ctx = XrpcContext(request=request, nsid=route.nsid, params=ep.parse_params(request.query.items()))
        if route.auth is not None:
            ctx.auth = await route.auth(request, ctx.params)
        await self._read_input(route, request, ctx)
        result = await route.handler(ctx)
        return await self._reply(route, request, ctx, result, call)

    async def _read_input(self, route: _Route, request: web.Request, ctx: XrpcContext) -> None:
        expected = route.endpoint.input
        presence = _body_presence(request)
        if expected is None:
            # An empty chunked body is no body: read one byte to tell.
            if presence == "present" and (request.content_length or await request.content.read(1)):
                raise InvalidRequest("A request body was provided when none was expected", rule="body")
            return
        if presence == "missing":
            raise InvalidRequest("A request body is expected but none was provided", rule="body")
        content_type = request.headers.get("Content-Type")
        ctx.encoding = _check_encoding(expected.encoding, content_type)
        length = request.content_length
        limit = route.json_limit if route.json_input else route.raw_limit
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request entity too large: {length} bytes, more than {limit}")
        body = RawBody(
            request.content,
            limit=limit,
            content_type=ctx.encoding,
            length=length,
            identity="Content-Encoding" not in request.headers,
        )
        if route.json_input:
            ctx.input = route.endpoint.parse_input(content_type, await body.read(), max_json_bytes=limit)
        else:
            ctx.body = body

    async def _reply(
        self, route: _Route, request: web.Request, ctx: XrpcContext, result: Any, call: _Call
    ) -> web.StreamResponse:
        output = route.endpoint.output
        check = self.validate_output
        if isinstance(result, web.StreamResponse):  # the escape hatch: the handler built its reply
            if not result.prepared:
                result.headers.update(ctx.response_headers)
            return result
        if result is None:
            if check and output is not None:
                raise InternalServerError(f"{route.nsid}: a response body is expected but none was provided")
            response: web.StreamResponse = web.Response(status=200)
        elif isinstance(result, dict):
            if check:
                self._check_json_output(route, result)
            response = _json_response(200, datamodel.value_to_json(result))
        elif isinstance(result, RawOutput):
            mime = result.content_type.split(";", 1)[0].strip().lower()
            if check and (output is None or not blob_accepts((output.encoding,), mime)):
                raise InternalServerError(f"{route.nsid}: invalid response encoding {mime!r}")
            if not isinstance(result.body, bytes | bytearray | memoryview):
                response = web.StreamResponse(status=200)
                response.headers["Content-Type"] = result.content_type
                response.headers.update(ctx.response_headers)
                if result.length is not None:
                    response.content_length = result.length
                call.prepared = True
                await response.prepare(request)
                if request.method != "HEAD":
                    async for chunk in result.body:
                        await response.write(chunk)
                elif isinstance(result.body, AsyncGenerator):
                    await result.body.aclose()
                await response.write_eof()
                return response
            response = web.Response(status=200, body=bytes(result.body))
            response.headers["Content-Type"] = result.content_type
        else:
            raise TypeError(f"handler of {route.nsid} returned {type(result).__name__}")
        response.headers.update(ctx.response_headers)
        return response

    def _check_json_output(self, route: _Route, value: dict[str, Any]) -> None:
        output = route.endpoint.output
        if output is None:
            raise InternalServerError(f"{route.nsid}: a response body was provided when none was expected")
        if output.encoding != "application/json":
            raise InternalServerError(f"{route.nsid}: JSON returned, but the output is {output.encoding}")
        try:
            route.endpoint.check_output(value)
        except InvalidLexiconData as exc:
            raise InternalServerError(str(exc)) from exc

    async def _serve_subscription(
        self, route: _Route, request: web.Request, call: _Call
    ) -> web.StreamResponse:
        if request.method != "GET":
            raise InvalidRequest(f"Incorrect HTTP method ({request.method}) expected GET", rule="method")
        ws = web.WebSocketResponse(
            # No permessage-deflate, as the reference: frames are CBOR and CARs, and
            # compressing each one for every subscriber costs more than it saves.
            compress=False,
            max_msg_size=SUBSCRIPTION_INBOUND_LIMIT,
            heartbeat=route.heartbeat,
        )
        if not ws.can_prepare(request).ok:
            raise UpgradeRequired(f"{route.nsid} is a subscription: connect with a WebSocket upgrade")
        call.prepared = True
        await ws.prepare(request)
        try:
            # As the reference, the stream opens first and a bad parameter is an error frame.
            params = route.endpoint.parse_params(request.query.items())
            ctx = SubscriptionContext(request=request, nsid=route.nsid, params=params, ws=ws)
            if route.auth is not None:
                ctx.auth = await route.auth(request, params)
            await route.handler(ctx)
        except Exception as exc:
            _, body = self._error_reply_logged(exc, route.nsid)
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(encode_error_frame(body["error"], body["message"]))
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=body["error"].encode()[:120])
            return ws
        if not ws.closed:
            with contextlib.suppress(ConnectionError):
                await ws.close()
        return ws

    # --- errors --------------------------------------------------------------------------

    def _error_reply_logged(self, exc: BaseException, nsid: str) -> tuple[int, dict[str, str]]:
        status, body = error_reply(exc)
        if status >= 500:
            self._log_failure(exc, nsid, status)
        else:
            log.debug("%s error in xrpc method %s: %s", body["error"], nsid, body["message"])
        return status, body

    @staticmethod
    def _log_failure(exc: BaseException, nsid: str, status: int) -> None:
        if isinstance(exc, StoreUnavailable):  # an outage fails every call alike: one line each, no traceback
            log.error("StoreUnavailable (%d) in xrpc method %s: %s", status, nsid, exc)
            return
        name = exc.xrpc_error if isinstance(exc, AtrepoError) else type(exc).__name__
        log.error("%s (%d) in xrpc method %s: %s", name, status, nsid, exc, exc_info=exc)

    def _error_response(self, exc: BaseException, nsid: str) -> web.Response:
        status, body = self._error_reply_logged(exc, nsid)
        response = _json_response(status, body)
        if isinstance(exc, PayloadTooLarge):
            # The rest of an oversized body is not worth reading to keep the connection.
            response.force_close()
        elif isinstance(exc, UpgradeRequired):
            response.headers["Upgrade"] = "websocket"
        return response


# --- request checks ------------------------------------------------------------------------


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


def _check_method(method: str, expected: str) -> None:
    if method == expected or (method == "HEAD" and expected == "GET"):
        return
    raise InvalidRequest(f"Incorrect HTTP method ({method}) expected {expected}", rule="method")


def _body_presence(request: web.Request) -> Literal["missing", "empty", "present"]:
    """As the reference: framing headers decide, not the bytes (``Content-Length: 0`` is "empty")."""
    headers = request.headers
    if "Transfer-Encoding" in headers:
        return "present"
    length = headers.get("Content-Length")
    if length is None:
        return "missing"
    return "empty" if length.strip() == "0" else "present"


def _check_encoding(expected: str, content_type: str | None) -> str:
    """The request's bare MIME type, if the lexicon's ``encoding`` admits it (checked before reading)."""
    if not content_type:
        raise InvalidRequest("Request encoding (Content-Type) required but not provided", rule="encoding")
    mime = content_type.split(";", 1)[0].strip().lower()
    if not blob_accepts((expected,), mime):
        raise InvalidRequest(f"Wrong request encoding (Content-Type): {mime[:100]}", rule="encoding")
    return mime


def bind_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket, bound now (IPv6 when ``host`` has a colon).

    Servers bind before they build anything, so that with port 0 (tests) the
    real port, and so their public URL, is known when routes are declared.
    ``reuse_port``: several worker processes bind the same port and the
    kernel spreads new connections over them (``SO_REUSEPORT``; Linux, BSD).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024 if reuse_port else 128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
