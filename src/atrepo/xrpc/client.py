"""An async XRPC client over aiohttp: queries, procedures, and errors mapped back to classes.

An error reply becomes the :class:`AtrepoError` subclass named by its
``error`` field (``RepoNotFound`` -> :class:`RepoNotFound`, see
``errors.XRPC_ERROR_CLASSES``), so code that calls another service catches the
same classes a local failure raises. A name with no class here is an
:class:`XrpcError` carrying the name and the status. A reply without an XRPC
body (a proxy's HTML page) is named from its status as the reference client
does (``httpResponseCodeToName``).

Bodies are bounded: a reply larger than ``max_response_bytes`` raises
:class:`LimitExceeded` before it is held whole. Network failures stay aiohttp's
``ClientError``: they are not answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import aiohttp

from atrepo.core import datamodel
from atrepo.core.cid import CID
from atrepo.core.errors import XRPC_ERROR_CLASSES, AtrepoError, LimitExceeded, XrpcError

__all__ = ["MAX_RESPONSE_BYTES", "XrpcClient", "XrpcResponse", "error_from_reply"]

#: Default bound on a reply body held in memory (a repository CAR can be large; raise it per client).
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
#: How much of an error reply is read to find its name and message.
_MAX_ERROR_BYTES: Final = 64 * 1024

_NSID_PATH = re.compile(r"[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*")

#: The reference's names for statuses (``@atproto/xrpc`` ``ResponseType``).
_STATUS_NAMES: Final = {
    400: "InvalidRequest",
    401: "AuthenticationRequired",
    403: "Forbidden",
    404: "XRPCNotSupported",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "RateLimitExceeded",
    500: "InternalServerError",
    501: "MethodNotImplemented",
    502: "UpstreamFailure",
    503: "NotEnoughResources",
    504: "UpstreamTimeout",
}


def _status_name(status: int) -> str:
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    if 400 <= status < 500:
        return "InvalidRequest"
    if status >= 500:
        return "InternalServerError"
    return "XRPCNotSupported"


def error_from_reply(status: int, body: bytes) -> AtrepoError:
    """The error an XRPC error reply stands for: its named class, else :class:`XrpcError`."""
    name = message = None
    try:
        obj = json.loads(body[:_MAX_ERROR_BYTES])
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if isinstance(obj.get("error"), str) and obj["error"]:
            name = obj["error"][:100]
        if isinstance(obj.get("message"), str):
            message = obj["message"]
    if name is None:
        name = _status_name(status)
    if not message:
        message = f"{name} (HTTP {status})"
    cls = XRPC_ERROR_CLASSES.get(name)
    if cls is not None:
        return cls(message)
    return XrpcError(name, message, status)


@dataclass(frozen=True, slots=True)
class XrpcResponse:
    """A successful reply: status, headers, bare content type and body bytes."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's)
    content_type: str
    body: bytes

    def value(self) -> Any:
        """JSON as a data-model value (CIDs and bytes decoded); ``None`` when empty; else the bytes."""
        if not self.body:
            return None
        if self.content_type == "application/json":
            return datamodel.parse_json(self.body, max_bytes=len(self.body))
        return self.body


def _param(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, CID):
        return str(value)
    raise TypeError(f"an XRPC parameter cannot be a {type(value).__name__}")


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, _param(v)) for v in value)
        else:
            pairs.append((key, _param(value)))
    return pairs


class XrpcClient:
    """Calls to one service: ``await client.query(nsid, params)``, ``await client.procedure(...)``.

    ``token`` is sent as ``Authorization: Bearer <token>`` (settable between
    calls); ``headers`` go with every call. Pass a ``session`` to share its
    connection pool (it is then not closed here); otherwise the client owns one
    with a ``timeout`` in seconds for each call.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.headers: dict[str, str] = dict(headers or {})
        self.max_response_bytes = max_response_bytes
        self._owned = session is None
        self._session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def close(self) -> None:
        if self._owned:
            await self._session.close()

    async def __aenter__(self) -> XrpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def query(
        self, nsid: str, params: Mapping[str, Any] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """GET a query; JSON comes back as a data-model value, other encodings as bytes."""
        return (await self.call("GET", nsid, params, headers=headers)).value()

    async def procedure(
        self,
        nsid: str,
        params: Mapping[str, Any] | None = None,
        input: Any = None,
        *,
        encoding: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST a procedure.

        ``input``: a data-model value (sent as JSON), bytes or an async stream of
        bytes (sent as ``encoding``, default ``application/octet-stream``), or
        ``None`` for no body.
        """
        response = await self.call("POST", nsid, params, input=input, encoding=encoding, headers=headers)
        return response.value()

    async def call(
        self,
        method: str,
        nsid: str,
        params: Mapping[str, Any] | None = None,
        *,
        input: Any = None,
        encoding: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> XrpcResponse:
        """One request; raises the mapped error for a reply of status 400 or more."""
        if not _NSID_PATH.fullmatch(nsid):
            raise ValueError(f"not an XRPC method name: {nsid[:100]!r}")
        data: Any = None
        content_type: dict[str, str] = {}
        if isinstance(input, dict):
            data = json.dumps(datamodel.value_to_json(input), ensure_ascii=False, separators=(",", ":"))
            data = data.encode()
            content_type["Content-Type"] = encoding or "application/json"
        elif isinstance(input, bytes | bytearray | memoryview | AsyncIterable):
            data = input
            content_type["Content-Type"] = encoding or "application/octet-stream"
        elif input is not None:
            raise TypeError(f"an XRPC input cannot be a {type(input).__name__}")
        auth = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        sent = _merged(self.headers, auth, content_type, headers or {})
        url = f"{self.base_url}/xrpc/{nsid}"
        async with self._session.request(method, url, params=_query(params), data=data, headers=sent) as resp:
            if resp.status >= 400:
                raise error_from_reply(resp.status, await _read(resp, _MAX_ERROR_BYTES, truncate=True))
            body = await _read(resp, self.max_response_bytes)
            return XrpcResponse(resp.status, resp.headers, resp.content_type.lower(), body)


def _merged(*layers: Mapping[str, str]) -> dict[str, str]:
    """Headers, later layers winning, names compared without case (one value each)."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            old = names.get(name.lower())
            if old is not None:
                del out[old]
            names[name.lower()] = name
            out[name] = value
    return out


async def _read(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    """The reply body, at most ``limit`` bytes (more: cut when ``truncate``, else an error)."""
    if resp.content_length is not None and resp.content_length > limit and not truncate:
        raise LimitExceeded("XRPC response bytes", resp.content_length, limit, str(resp.url))
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            if truncate:
                chunks.append(chunk[: limit - (size - len(chunk))])
                break
            raise LimitExceeded("XRPC response bytes", size, limit, str(resp.url))
        chunks.append(chunk)
    return b"".join(chunks)
