"""Proxying XRPC calls to another service (an AppView, a chat service, a labeler) with service auth.

A PDS answers for its accounts' repositories; everything network-wide (feeds,
threads, notifications, other people's profiles) belongs to an AppView, and
clients still send those calls to their PDS. The host forwards them, as the
reference PDS does (``pipethrough.ts`` of ``@atproto/pds``):

* **which calls**: a call no local route serves goes to the service its
  ``atproto-proxy: <did>#<service id>`` header names; without the header, an
  ``app.*`` call goes to the configured AppView (``appview_url`` /
  ``appview_did``, service id ``bsky_appview``). A locally served ``app.*``
  method (preferences) is forwarded only when the header names a service other
  than the configured AppView. With neither header nor AppView the router
  answers as before (501 ``MethodNotImplemented``). Other locally served
  methods ignore the header, as in the reference.
* **never proxied**: account-management methods (400 ``InvalidToken`` "Bad
  token method"), HTTP methods other than GET, HEAD and POST (400).
* **the target**: the header's DID is resolved (did:plc through the host's PLC
  directory, did:web), cached with a bound on entries; the service entry with
  that id gives the endpoint (its origin; the path and query are the caller's).
  A malformed header, an unresolvable DID or a missing service: 400
  ``InvalidRequest`` with the reference's messages. The configured AppView is
  reached without resolving its DID.
* **SSRF**: a service found through a DID document is somebody else's
  choice of address, so (as the reference, unless ``proxy_allow_private``)
  it must be https and its name must resolve to public unicast addresses
  only: never loopback, private, link-local or multicast. Otherwise the call
  fails like an unreachable service (502). The configured AppView is the
  operator's choice and is not restricted.
* **auth**: the call must carry a valid access token (401 ``AuthMissing``
  without one); the host adds ``Authorization: Bearer <service JWT>`` from
  the account (``iss``) to the service's bare DID (``aud``, no ``#fragment``),
  for this method (``lxm``), signed with the account's repository key.
* **headers**: to the service, only ``Accept-Encoding`` (``identity`` when the
  client sent none), ``Accept-Language``, ``atproto-accept-labelers``,
  ``X-Bsky-Topics`` and, with a body, ``Content-Type``; back, the content
  headers (length, encoding, type, language) and ``atproto-repo-rev``,
  ``atproto-content-labelers``, ``Retry-After``. Nothing else passes either
  way (no cookies, no client ``Authorization``). The reply body is streamed
  as it came, still compressed if it was.
* **failures**: a service that cannot be reached, or sends no headers within
  ``headers_timeout``: 502 ``UpstreamFailure`` "Upstream service
  unreachable". An error reply (status >= 400) is answered with its status
  (500 becomes 502 ``UpstreamFailure``) and its ``error``/``message`` (the
  status's generic name when it sent none). A reply larger than
  ``max_response_bytes`` is refused (502) or, if that shows only midway, cut.

Request bodies are read whole (bounded by the router's raw body limit) before
forwarding: procedures proxied to an AppView are small JSON documents.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import socket
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from atrepo.core.errors import AtrepoError, InvalidRequest, InvalidToken, XrpcError
from atrepo.identity.resolver import DIDResolver
from atrepo.xrpc import XrpcRouter
from atrepo.xrpc.server import RAW_BODY_LIMIT, ForwardedReply, RawBody

from .service_auth import is_privileged, is_protected, mint, scope_is_privileged, signer_account

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "APPVIEW_SERVICE_ID",
    "PROXY_HEADER",
    "PROXY_KEY",
    "ServiceProxy",
    "Target",
    "parse_proxy_header",
    "register",
    "service_origin",
]

log = logging.getLogger("atrepo.host.proxy")

PROXY_HEADER: Final = "atproto-proxy"
#: The service id of an AppView in DID documents and ``atproto-proxy`` headers.
APPVIEW_SERVICE_ID: Final = "bsky_appview"

#: The reference's proxy defaults: headers within 10 s, no 30 s pause in the body, 10 MiB at most.
HEADERS_TIMEOUT_S: Final = 10.0
BODY_TIMEOUT_S: Final = 30.0
MAX_RESPONSE_BYTES: Final = 10 * 1024 * 1024
#: Services' DID documents kept at once (the cache is a bounded LRU with a TTL).
RESOLUTION_CACHE_ENTRIES: Final = 1000
#: How much of an error reply is read to find its ``error`` and ``message``.
_ERROR_BODY_LIMIT: Final = 64 * 1024

_REQUEST_HEADERS: Final = ("Accept-Language", "atproto-accept-labelers", "X-Bsky-Topics")
_RESPONSE_CONTENT_HEADERS: Final = ("Content-Length", "Content-Encoding", "Content-Type", "Content-Language")
_RESPONSE_HEADERS: Final = ("atproto-repo-rev", "atproto-content-labelers", "Retry-After")
_UNREACHABLE: Final = "Upstream service unreachable"
#: Generic names and texts of error statuses (``@atproto/xrpc`` ``ResponseType``).
_STATUS_NAMES: Final = {
    400: ("InvalidRequest", "Invalid Request"),
    401: ("AuthenticationRequired", "Authentication Required"),
    403: ("Forbidden", "Forbidden"),
    404: ("XRPCNotSupported", "XRPC Not Supported"),
    406: ("NotAcceptable", "Not Acceptable"),
    413: ("PayloadTooLarge", "Payload Too Large"),
    415: ("UnsupportedMediaType", "Unsupported Media Type"),
    429: ("RateLimitExceeded", "Rate Limit Exceeded"),
    500: ("InternalServerError", "Internal Server Error"),
    501: ("MethodNotImplemented", "Method Not Implemented"),
    502: ("UpstreamFailure", "Upstream Failure"),
    503: ("NotEnoughResources", "Not Enough Resources"),
    504: ("UpstreamTimeout", "Upstream Timeout"),
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a call goes: the service's DID (the token's ``aud``), its service id, its origin.

    ``trusted``: configured by the operator (the AppView), so not held to the SSRF rules.
    """

    did: str
    service_id: str
    origin: str
    trusted: bool = False


def is_public_address(host: str) -> bool:
    """Whether ``host`` (an IP address) is public unicast: what a DID-named service may be at."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Name resolution that keeps public unicast addresses only (none left: the lookup fails).

    Checking the addresses actually connected to, rather than the name, is what
    stops a DNS name that points at 127.0.0.1 or 10.0.0.0/8.
    """

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = [r for r in await self._inner.resolve(host, port, family) if is_public_address(r["host"])]
        if not found:
            raise OSError(errno.EHOSTUNREACH, f"{host} resolves to no public unicast address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def parse_proxy_header(value: str) -> tuple[str, str]:
    """``(did, service id)`` of an ``atproto-proxy`` value, or 400 with the reference's messages."""
    index = value.find("#")
    if index == 0:
        raise InvalidRequest("no did specified in proxy header")
    if index == -1 or index == len(value) - 1:
        raise InvalidRequest("no service id specified in proxy header")
    if "#" in value[index + 1 :]:
        raise InvalidRequest("invalid proxy header format")
    if " " in value:
        raise InvalidRequest("proxy header cannot contain spaces")
    return value[:index], value[index + 1 :]


def service_origin(doc: Mapping[str, Any], did: str, service_id: str) -> str | None:
    """The origin (``scheme://host[:port]``) of the service ``#service_id`` of a DID document.

    An entry matches by ``#id`` or ``did#id``; its endpoint must be an http(s) URL.
    """
    services = doc.get("service")
    if not isinstance(services, list):
        return None
    for service in services:
        if not isinstance(service, Mapping):
            continue
        entry_id = service.get("id")
        if entry_id not in (f"#{service_id}", f"{did}#{service_id}"):
            continue
        return _origin(service.get("serviceEndpoint"))
    return None


def _origin(url: object) -> str | None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    if not parts.hostname or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _decode_error_body(data: bytes | bytearray, encoding: str | None) -> tuple[str | None, str | None]:
    """``error`` and ``message`` of a JSON error reply, (None, None) when it is not one."""
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            data = zlib.decompressobj(wbits=47).decompress(data, _ERROR_BODY_LIMIT)
        elif encoding not in (None, "", "identity"):
            return None, None
        value = json.loads(data)
    except (ValueError, zlib.error, RecursionError):
        return None, None
    if not isinstance(value, dict):
        return None, None
    error, message = value.get("error"), value.get("message")
    return (error if isinstance(error, str) else None, message if isinstance(message, str) else None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _is_json(content_type: str | None) -> bool | None:
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("application/") and (mime == "application/json" or mime.endswith("+json"))


class ServiceProxy:
    """The router's delegate (:meth:`XrpcRouter.delegate`): forwards calls to other services.

    One per host; owns an outbound session that never decompresses (bodies are
    relayed as sent) and a DID resolver whose cache holds at most
    ``RESOLUTION_CACHE_ENTRIES`` documents. ``close()`` at shutdown.
    """

    def __init__(
        self,
        host: HostContext,
        *,
        headers_timeout: float = HEADERS_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_request_bytes: int = RAW_BODY_LIMIT,
    ) -> None:
        self.host = host
        self.headers_timeout = headers_timeout
        self.body_timeout = body_timeout
        self.max_response_bytes = max_response_bytes
        self.max_request_bytes = max_request_bytes
        config = host.config
        self.appview: Target | None = None
        if config.appview_url is not None and config.appview_did is not None:
            origin = _origin(config.appview_url)
            if origin is None:
                raise ValueError(f"AppView URL is not an http(s) URL: {config.appview_url!r}")
            self.appview = Target(config.appview_did, APPVIEW_SERVICE_ID, origin, trusted=True)
        self.allow_private = config.proxy_allow_private
        self.resolver = DIDResolver(
            plc_url=host.plc_url, session=host.http, max_entries=RESOLUTION_CACHE_ENTRIES
        )
        #: Outbound sessions: trusted targets (any address) and DID-named ones (public only).
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    @property
    def appview_ref(self) -> str | None:
        """``<did>#bsky_appview`` of the configured AppView (what its header would say)."""
        return None if self.appview is None else f"{self.appview.did}#{APPVIEW_SERVICE_ID}"

    def _outbound(self, guarded: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(guarded)
        if session is None:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver()) if guarded else None
            session = self._sessions[guarded] = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.headers_timeout, sock_read=self.body_timeout
                ),
            )
        return session

    async def close(self) -> None:
        await self.resolver.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    # --- the delegate ------------------------------------------------------------------

    async def __call__(self, request: web.Request, nsid: str, served: bool) -> ForwardedReply | None:
        header = request.headers.get(PROXY_HEADER)
        if served:
            # As the reference: a local route keeps the call unless it is one of the app.*
            # methods the host also answers, and the header names a service of its own.
            if header is None or not nsid.startswith("app.") or header == self.appview_ref:
                return None
        elif header is None and self.default_target(nsid) is None:
            return None
        return await self.forward(request, nsid, header)

    def default_target(self, nsid: str) -> Target | None:
        """Where a call without ``atproto-proxy`` goes: ``app.*`` to the configured AppView."""
        return self.appview if nsid.startswith("app.") else None

    async def target(self, header: str) -> Target:
        """The service an ``atproto-proxy`` value names (its DID resolved, cached)."""
        did, service_id = parse_proxy_header(header)
        if self.appview is not None and header == self.appview_ref:
            return self.appview
        try:
            doc = await self.resolver.resolve(did)
        except AtrepoError as exc:
            log.info("proxy: cannot resolve %s: %s", did, exc)
            raise InvalidRequest("could not resolve proxy did") from None
        origin = service_origin(doc.doc, did, service_id)
        if origin is None:
            raise InvalidRequest("could not resolve proxy did service url")
        return Target(did, service_id, origin)

    async def forward(self, request: web.Request, nsid: str, header: str | None) -> ForwardedReply:
        """Check, authenticate and send one call; the service's reply (or the error) to relay."""
        if request.method not in ("GET", "HEAD", "POST"):
            raise InvalidRequest("XRPC requests only supports GET and POST")
        if is_protected(nsid):
            raise InvalidToken("Bad token method")
        if header is not None:
            target = await self.target(header)
        else:
            default = self.default_target(nsid)
            if default is None:  # the delegate checked; kept for callers of forward()
                raise InvalidRequest(f"No service configured for {nsid}")
            target = default
        creds = await self.host.tokens.verify_access(request, {})
        if is_privileged(nsid) and not scope_is_privileged(creds.scope):
            raise InvalidToken("Bad token method")
        account = await signer_account(self.host, creds, lxm=nsid)
        token = mint(self.host, account, aud=target.did, lxm=nsid)
        headers = {"Accept-Encoding": request.headers.get("Accept-Encoding") or "identity"}
        for name in _REQUEST_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        headers["Authorization"] = f"Bearer {token}"
        body: bytes | None = None
        if request.method == "POST" and request.body_exists:
            content_type = request.headers.get("Content-Type")
            if content_type:
                headers["Content-Type"] = content_type
            # The server already undid any Content-Encoding: the bytes go as they are now.
            body = await RawBody(
                request.content,
                limit=self.max_request_bytes,
                content_type=content_type or "",
                length=request.content_length,
            ).read()
        # the path and query as the client sent them (still percent-encoded) on the service's origin
        url = target.origin + request.raw_path
        guarded = not (target.trusted or self.allow_private)
        parts = urlsplit(target.origin)
        host = parts.hostname or ""
        if guarded and (parts.scheme != "https" or (_is_ip(host) and not is_public_address(host))):
            log.warning(
                "proxy: refused %s for %s: not https or not a public address", target.origin, target.did
            )
            raise XrpcError("UpstreamFailure", _UNREACHABLE, 502)
        return await self._send(request.method, url, headers, body, guarded=guarded)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, *, guarded: bool
    ) -> ForwardedReply:
        session = self._outbound(guarded)
        try:
            async with asyncio.timeout(self.headers_timeout):
                resp = await session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("proxy: %s %s failed: %s", method, url.split("?", 1)[0], exc or type(exc).__name__)
            raise XrpcError("UpstreamFailure", _UNREACHABLE, 502) from None
        if resp.status >= 400:
            try:
                return await self._error_reply(resp)
            finally:
                resp.release()
        try:
            declared = resp.content_length
            if declared is not None and declared > self.max_response_bytes:
                log.warning(
                    "proxy: %s answered %d bytes, more than %d", url, declared, self.max_response_bytes
                )
                raise XrpcError("UpstreamFailure", "Upstream response too large", 502)
        except BaseException:
            resp.release()
            raise
        out: dict[str, str] = {}
        for name in (*_RESPONSE_CONTENT_HEADERS, *_RESPONSE_HEADERS):
            values = resp.headers.getall(name, [])
            if values:
                out[name] = ",".join(values)
        return ForwardedReply(resp.status, out, self._relay(resp))

    async def _relay(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in resp.content.iter_any():
                received += len(chunk)
                if received > self.max_response_bytes:
                    raise XrpcError("UpstreamFailure", "Upstream response too large", 502)
                yield chunk
        finally:
            resp.release()

    async def _error_reply(self, resp: aiohttp.ClientResponse) -> ForwardedReply:
        """The service's error, as the reference relays it: its status (500 -> 502), name, message."""
        error = message = None
        if _is_json(resp.headers.get("Content-Type")) is not False:
            data = bytearray()
            try:
                async with asyncio.timeout(self.headers_timeout):
                    while len(data) < _ERROR_BODY_LIMIT:
                        chunk = await resp.content.read(_ERROR_BODY_LIMIT - len(data))
                        if not chunk:
                            break
                        data += chunk
            except (aiohttp.ClientError, OSError, TimeoutError):
                data.clear()
            error, message = _decode_error_body(data, resp.headers.get("Content-Encoding"))
        status = 502 if resp.status == 500 else resp.status
        generic = _STATUS_NAMES.get(status)
        if generic is None:
            generic = (
                ("InvalidRequest", "Invalid Request")
                if status < 500
                else ("UpstreamFailure", "Upstream Failure")
            )
        payload = {"error": error or generic[0], "message": message or generic[1]}
        headers = {"Content-Type": "application/json; charset=utf-8"}
        for name in _RESPONSE_HEADERS:
            values = resp.headers.getall(name, [])
            if values:
                headers[name] = ",".join(values)
        return ForwardedReply(status, headers, json.dumps(payload, ensure_ascii=False).encode())


#: Where the host's proxy is kept on its aiohttp application (tests reach it there).
PROXY_KEY: Final = web.AppKey("atrepo_service_proxy", ServiceProxy)


def register(router: XrpcRouter, host: HostContext) -> ServiceProxy:
    """Make a :class:`ServiceProxy` the router's delegate; :func:`attach` it to the app for shutdown."""
    proxy = ServiceProxy(host)
    router.delegate(proxy)
    return proxy


def attach(app: web.Application, proxy: ServiceProxy) -> None:
    """Keep ``proxy`` on ``app`` (:data:`PROXY_KEY`) and close it when the app is cleaned up."""
    app[PROXY_KEY] = proxy

    async def close(_app: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
