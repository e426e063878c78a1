"""A did:plc directory over HTTP (aiohttp), the API of identity spec §4.5.

All SQLite work runs on one dedicated worker thread (see
:mod:`atrepo.identity.plc.store`), which keeps the event loop free and makes
the store single-writer. Errors are HTTP 400/404 with ``{"message": ...}`` as
the reference directory answers, not XRPC-style.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web

from atrepo.core.errors import AtrepoError, InvalidPLCOperation, InvalidSyntax
from atrepo.core.jsonio import parse_outside_json
from atrepo.core.syntax import parse_datetime
from atrepo.identity import limits
from atrepo.identity.did import validate_plc_did
from atrepo.identity.plc.operations import LogEntry, PLCRuleError, parse_timestamp, render_document
from atrepo.identity.plc.store import PLCStore, StoreSettings

__all__ = ["STORE_KEY", "PLCDirectory", "create_app"]

log = logging.getLogger("atrepo.identity.plc")

_T = TypeVar("_T")
DB_FILENAME: Final = "plc.sqlite3"
DID_CONTENT_TYPE: Final = "application/did+ld+json"


def _json(body: object, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type=content_type,
        charset="utf-8",
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"message": message}, status)


class PLCDirectory:
    """Request handlers bound to one store and its worker thread."""

    def __init__(self, store: PLCStore) -> None:
        self.store = store
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plc-store")

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def close(self) -> None:
        await self._run(self.store.close)
        self._worker.shutdown(wait=True)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_health", self.health),
            web.get("/export", self.export),
            web.get("/{did}", self.document),
            web.get("/{did}/data", self.data),
            web.get("/{did}/log", self.log),
            web.get("/{did}/log/audit", self.audit),
            web.get("/{did}/log/last", self.last),
            web.post("/{did}", self.submit),
        ]

    @staticmethod
    def _did(request: web.Request) -> str:
        did = request.match_info["did"]
        try:
            validate_plc_did(did)
        except InvalidSyntax as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"message": str(exc)}), content_type="application/json"
            ) from None
        return did

    async def health(self, request: web.Request) -> web.Response:
        return _json({"version": "atrepo"})

    async def document(self, request: web.Request) -> web.Response:
        did = self._did(request)
        known, state = await self._run(self.store.state, did)
        if state is None:
            return _error(404, f"DID not registered: {did}" if not known else f"DID not available: {did}")
        return _json(render_document(state), content_type=DID_CONTENT_TYPE)

    async def data(self, request: web.Request) -> web.Response:
        did = self._did(request)
        known, state = await self._run(self.store.state, did)
        if state is None:
            return _error(404, f"DID not registered: {did}" if not known else f"DID not available: {did}")
        return _json(state.to_data())

    async def log(self, request: web.Request) -> web.Response:
        did = self._did(request)
        active = await self._run(self.store.active_log, did)
        if not active:
            return _error(404, f"DID not registered: {did}")
        return _json([e.operation for e in active])

    async def audit(self, request: web.Request) -> web.Response:
        did = self._did(request)
        entries = await self._run(self.store.audit_log, did)
        if not entries:
            return _error(404, f"DID not registered: {did}")
        return _json([e.to_json() for e in entries])

    async def last(self, request: web.Request) -> web.Response:
        did = self._did(request)
        active = await self._run(self.store.active_log, did)
        if not active:
            return _error(404, f"DID not registered: {did}")
        return _json(active[-1].operation)

    async def submit(self, request: web.Request) -> web.Response:
        did = self._did(request)
        try:
            body = await request.read()
            op = parse_outside_json(body, lambda why: InvalidPLCOperation(f"request body is not JSON: {why}"))
        except web.HTTPRequestEntityTooLarge:
            return _error(400, f"request body larger than {limits.PLC_MAX_REQUEST_BYTES} bytes")
        except InvalidPLCOperation as exc:
            return _error(400, str(exc))
        try:
            entry = await self._run(self.store.submit, did, op)
        except PLCRuleError as exc:
            log.warning("rejected op for %s: %s", did, exc)
            return _error(400, str(exc))
        except AtrepoError as exc:
            log.warning("rejected op for %s: %s", did, exc)
            return _error(400, f"format: {exc}")
        return _json({"cid": entry.cid, "createdAt": entry.created_at})

    async def export(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            count = int(query.get("count", "10"))
        except ValueError:
            return _error(400, "count must be an integer")
        if count < 1:
            return _error(400, "count must be at least 1")
        count = min(count, limits.PLC_EXPORT_MAX_COUNT)
        after = query.get("after")
        lines: list[str]
        if after is not None and after.isdigit():
            rows = await self._run(self.store.export_sequenced, int(after), count)
            lines = [json.dumps(_sequenced(seq, e), separators=(",", ":")) for seq, e in rows]
        else:
            try:
                after_ms = None if after is None else _parse_after(after)
            except AtrepoError as exc:
                return _error(400, f"after must be a sequence number or a datetime: {exc}")
            entries = await self._run(self.store.export_by_time, after_ms, count)
            lines = [json.dumps(e.to_json(), separators=(",", ":")) for e in entries]
        return web.Response(text="\n".join(lines), content_type="application/jsonl", charset="utf-8")


def _sequenced(seq: int, entry: LogEntry) -> dict[str, Any]:
    return {
        "type": "sequenced_op",
        "did": entry.did,
        "operation": entry.operation,
        "cid": entry.cid,
        "createdAt": entry.created_at,
        "seq": seq,
    }


def _parse_after(text: str) -> int:
    try:
        return parse_timestamp(text)
    except PLCRuleError:
        when = parse_datetime(text)
        return int(when.timestamp() * 1000)


STORE_KEY: Final = web.AppKey("plc_directory", PLCDirectory)


def create_app(
    data_dir: str | Path | None = None,
    *,
    settings: StoreSettings | None = None,
    clock: Callable[[], int] | None = None,
) -> web.Application:
    """An aiohttp application serving a directory stored in ``data_dir`` (memory when None)."""
    path: str | Path = ":memory:"
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        path = Path(data_dir) / DB_FILENAME
    store = (
        PLCStore(path, settings=settings) if clock is None else PLCStore(path, settings=settings, clock=clock)
    )
    directory = PLCDirectory(store)
    app = web.Application(client_max_size=limits.PLC_MAX_REQUEST_BYTES)
    app[STORE_KEY] = directory
    app.add_routes(directory.routes())

    async def close_store(_app: web.Application) -> None:
        await directory.close()

    app.on_cleanup.append(close_store)
    log.info("directory store at %s", path)
    return app
