"""The relay's admin API: ``/admin/*`` JSON endpoints under HTTP Basic ``admin:<password>``.

What an operator needs to act on what the status page shows, without
stopping the relay: ban and unban a host or a whole domain, change a host's
limits, take an account down (and back), and list hosts, banned domains and
downstream consumers. The reference relay has the same kinds of levers; the
paths here are the relay's own (not XRPC methods: no lexicon names them).

**Credentials.** ``Authorization: Basic base64("admin:" + password)``
(:func:`atrepo.xrpc.basic_auth.check_basic`, shared with the host). The
password is ``--admin-password`` or, when none is given, generated once into
``<data>/admin-password`` (mode 0600) at start, and only that path is
logged. Anything wrong with the header is one 401 ``AuthenticationRequired``.

**Errors** are XRPC-shaped, ``{"error", "message"}``: 400 ``InvalidRequest``
for a body that is not a JSON object with the named fields, 404 for an
unknown host (``HostNotFound``) or account (``RepoNotFound``).

**Endpoints** (bodies and answers are JSON objects):

* ``POST /admin/hosts/ban {hostname}``: disconnect, status ``banned`` (kept
  across restarts); ``POST /admin/hosts/unban {hostname}``: reconnect
  (refused while a banned domain covers the host).
* ``POST /admin/domains/ban {domain}``: the domain and its subdomains can no
  longer ``requestCrawl``, and every known host under it is banned as above;
  ``POST /admin/domains/unban {domain}`` lifts the domain ban only (hosts
  banned by it stay banned until unbanned one by one); ``GET /admin/domains``.
* ``POST /admin/hosts/limits {hostname, accountLimit?, perSecond?, perHour?,
  perDay?}``: a field left out stays; a rate given as ``null`` goes back to the
  default policy. Raising ``accountLimit`` fetches the host's throttled
  accounts that now fit (:meth:`HostManager.set_limits`).
* ``POST /admin/repo/takedown {did}`` and ``POST /admin/repo/reverse-takedown
  {did}``: the account's local status becomes ``takendown`` (its events are
  no longer relayed, its sync endpoints answer ``RepoTakendown``) or
  ``active`` again, staged through the ingest (whose account cache is the
  truth) with an ``#account`` event stating the relay's combined view.
* ``GET /admin/hosts``: every host, :meth:`HostLink.to_json` and its rates;
  ``GET /admin/consumers``: the downstream subscribers as the fan-out sees them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from atrepo.core.errors import AuthRequired, HostNotFound, InvalidRequest, RepoNotFound
from atrepo.store.relay import RelayStore
from atrepo.xrpc.basic_auth import admin_password, check_basic
from atrepo.xrpc.server import error_reply

from .hostnames import parse_host
from .hosts import HostLink
from .ingest import Ingest

if TYPE_CHECKING:
    from .app import RelayContext

__all__ = ["ADMIN_PASSWORD_FILENAME", "add_routes"]

log = logging.getLogger("atrepo.relay.admin")

#: Where the generated password is kept, in the relay's data directory.
ADMIN_PASSWORD_FILENAME: Final = "admin-password"
#: Sent with every admin answer: never cached, never framed, never sniffed.
_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: Asks a browser or curl for credentials on a 401.
_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="atrepo relay admin", charset="UTF-8"'}
#: Longest hostname, domain or DID accepted in a body.
_MAX_TEXT: Final = 2048

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


def _json(status: int, body: Any, extra: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    headers = {**_HEADERS, **(extra or {})}
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400."""
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} is required (a non-empty string)", path=name)
    if len(value) > _MAX_TEXT:
        raise InvalidRequest(f"{name} is too long", path=name)
    return value.strip()


def _hostname(body: dict[str, Any]) -> str:
    """The host key named in the body: a key as ``listHosts`` shows it, or a host's URL."""
    text = _text(body, "hostname").lower()
    if "://" in text:
        return parse_host(text, configured=True).key
    return text.rstrip(".")


def _limit(body: dict[str, Any], name: str, *, nullable: bool) -> int | None:
    value = body[name]
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if nullable else 0):
        least = "a positive integer or null" if nullable else "an integer >= 0"
        raise InvalidRequest(f"{name} must be {least}", path=name)
    return value


def _host_json(link: HostLink) -> dict[str, Any]:
    out = link.to_json()
    row = link.row
    out.update(
        id=link.id,
        url=link.url,
        trusted=row.trusted,
        perSecond=row.rate_per_second,
        perHour=row.rate_per_hour,
        perDay=row.rate_per_day,
    )
    return out


def _password(ctx: RelayContext) -> str:
    configured = ctx.config.admin_password
    if configured is not None:
        return configured
    ctx.config.data_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.config.data_dir / ADMIN_PASSWORD_FILENAME
    password = admin_password(path)
    log.info("admin password (HTTP Basic admin:<password>) is in %s", path)  # the path, never the password
    return password


def add_routes(app: web.Application, ctx: RelayContext) -> None:
    """Mount ``/admin/*`` on the relay's app (the password is read or generated now)."""
    password = _password(ctx)
    hosts = ctx.hosts
    worker = ctx.worker

    def route(method: str, path: str, handler: Handler) -> None:
        async def handle(request: web.Request) -> web.Response:
            try:
                if not check_basic(request.headers.get("Authorization"), password):
                    raise AuthRequired("Authentication Required")
                return _json(200, await handler(request))
            except Exception as exc:
                status, body = error_reply(exc)
                if isinstance(exc, HostNotFound | RepoNotFound):
                    status = 404
                if status >= 500:
                    log.exception("admin %s %s failed", method, path)
                return _json(status, body, _CHALLENGE if status == 401 else None)

        app.router.add_route(method, path, handle)

    def link_of(name: str) -> HostLink:
        link = hosts.by_name(name)
        if link is None:
            raise HostNotFound(f"no host {name} at this relay")
        return link

    async def ban_host(request: web.Request) -> dict[str, Any]:
        name = _hostname(await _body(request))
        link = link_of(name)
        await hosts.ban(name)
        log.warning("admin: host %s banned", name)
        return _host_json(link)

    async def unban_host(request: web.Request) -> dict[str, Any]:
        name = _hostname(await _body(request))
        link = link_of(name)
        if await worker.read(RelayStore.is_banned, name):
            raise InvalidRequest(f"a banned domain covers {name}: unban the domain first")
        if await hosts.unban(name):
            log.warning("admin: host %s unbanned", name)
        return _host_json(link)

    async def ban_domain(request: web.Request) -> dict[str, Any]:
        domain = _text(await _body(request), "domain").lower().rstrip(".")
        if not domain or any(c.isspace() or c in "/@?#" for c in domain):
            raise InvalidRequest("domain must be a bare domain name (example.com)", path="domain")
        await worker.run(RelayStore.ban_domain, domain)
        banned: list[str] = []
        for link in list(hosts.links.values()):
            if link.status != "banned" and await worker.read(RelayStore.is_banned, link.key):
                await hosts.ban(link.key)
                banned.append(link.key)
        log.warning("admin: domain %s banned (hosts banned with it: %s)", domain, banned or "none")
        return {"domain": domain, "bannedHosts": banned}

    async def unban_domain(request: web.Request) -> dict[str, Any]:
        domain = _text(await _body(request), "domain").lower().rstrip(".")
        removed = await worker.run(RelayStore.unban_domain, domain)
        if removed:
            log.warning("admin: domain %s unbanned", domain)
        return {"domain": domain, "removed": removed}

    async def list_domains(request: web.Request) -> dict[str, Any]:
        return {"domains": await worker.read(RelayStore.list_banned_domains)}

    async def set_limits(request: web.Request) -> dict[str, Any]:
        body = await _body(request)
        name = _hostname(body)
        link_of(name)
        limits: dict[str, Any] = {}
        if "accountLimit" in body:
            limits["account_limit"] = _limit(body, "accountLimit", nullable=False)
        for field, key in (
            ("perSecond", "rate_per_second"),
            ("perHour", "rate_per_hour"),
            ("perDay", "rate_per_day"),
        ):
            if field in body:
                limits[key] = _limit(body, field, nullable=True)
        if not limits:
            raise InvalidRequest("give at least one of accountLimit, perSecond, perHour, perDay")
        link = await hosts.set_limits(name, **limits)
        log.warning("admin: limits of %s set: %s", name, limits)
        return _host_json(link)

    async def set_takedown(request: web.Request, takendown: bool) -> dict[str, Any]:
        did = _text(await _body(request), "did")
        if not did.startswith("did:"):
            raise InvalidRequest("did must be a DID", path="did")
        ingest = ctx.ingest
        account = await ingest.account(did)
        if account is None:
            raise RepoNotFound(f"Could not find repo for DID: {did}")
        wanted = "takendown" if takendown else "active"
        if (account.status == "takendown") != takendown:
            updated = dataclasses.replace(account, status=wanted, updated_ms=time.time_ns() // 1_000_000)
            ingest.stage(updated, ingest.emit(did, Ingest.account_event(updated)))
            await ingest.durable()  # answer once the change and its #account event are stored
            account = updated
            log.warning("admin: %s is now %s", did, wanted)
        return {"did": did, "status": account.status, "active": account.active}

    async def takedown(request: web.Request) -> dict[str, Any]:
        return await set_takedown(request, True)

    async def reverse_takedown(request: web.Request) -> dict[str, Any]:
        return await set_takedown(request, False)

    async def list_hosts(request: web.Request) -> dict[str, Any]:
        links = sorted(hosts.links.values(), key=lambda link: link.id)
        return {"hosts": [_host_json(link) for link in links]}

    async def consumers(request: web.Request) -> dict[str, Any]:
        fanout = ctx.fanout
        head = fanout.tail
        listed = [
            {
                "lastSeq": sub.last,
                "behind": max(0, head - sub.last),
                "live": sub.live,
                "buffered": sub.buffered,
                "maxQueue": sub.max_queue,
            }
            for sub in sorted(fanout.subscribers, key=lambda s: s.last)
        ]
        return {"headSeq": head, "count": len(listed), "consumers": listed}

    route("POST", "/admin/hosts/ban", ban_host)
    route("POST", "/admin/hosts/unban", unban_host)
    route("POST", "/admin/hosts/limits", set_limits)
    route("GET", "/admin/hosts", list_hosts)
    route("POST", "/admin/domains/ban", ban_domain)
    route("POST", "/admin/domains/unban", unban_domain)
    route("GET", "/admin/domains", list_domains)
    route("POST", "/admin/repo/takedown", takedown)
    route("POST", "/admin/repo/reverse-takedown", reverse_takedown)
    route("GET", "/admin/consumers", consumers)
