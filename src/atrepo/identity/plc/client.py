"""Talking to a PLC directory as a client: read and verify logs, submit ops.

A client never trusts the directory's view of a DID: :func:`fetch_verified_log`
re-verifies the whole audit log locally before anything is built on top of it.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from atrepo.core.errors import AtrepoError, InvalidPLCOperation, LimitExceeded, ResolutionError
from atrepo.core.jsonio import parse_outside_json
from atrepo.identity import limits
from atrepo.identity.fetch import get_bounded
from atrepo.identity.plc.operations import AuditResult, verify_audit_log

__all__ = ["MAX_AUDIT_LOG_BYTES", "fetch_verified_log", "submit_operation", "verify_audit_log_bytes"]

#: Largest audit log read (a DID is rate-limited to ~100 ops a week of <= 4 KB).
MAX_AUDIT_LOG_BYTES = 4 * 1024 * 1024


async def fetch_verified_log(
    session: aiohttp.ClientSession, plc_url: str, did: str, *, timeout: float = limits.LOOKUP_TIMEOUT_S
) -> AuditResult:
    """``GET /<did>/log/audit`` and verify it (raises on any broken rule)."""
    url = f"{plc_url.rstrip('/')}/{did}/log/audit"
    try:
        status, body = await get_bounded(session, url, max_bytes=MAX_AUDIT_LOG_BYTES, timeout=timeout)
    except LimitExceeded as exc:
        raise ResolutionError(f"{did}: audit log too large: {exc}") from None
    if status == 404:
        raise ResolutionError(f"{did}: not found in the directory at {plc_url}")
    if status != 200:
        raise ResolutionError(f"{did}: HTTP {status} from {url}")
    return verify_audit_log_bytes(body, did)


def verify_audit_log_bytes(body: bytes, did: str) -> AuditResult:
    """Parse and verify an audit log body as a directory sent it (pure; the fuzz target's entry)."""
    log = parse_outside_json(body, lambda why: ResolutionError(f"{did}: audit log: {why}"))
    if not isinstance(log, list):
        raise ResolutionError(f"{did}: audit log is not a JSON array")
    return verify_audit_log(log, expected_did=did)


async def submit_operation(
    session: aiohttp.ClientSession,
    plc_url: str,
    did: str,
    op: dict[str, Any],
    *,
    timeout: float = limits.LOOKUP_TIMEOUT_S,
) -> dict[str, Any]:
    """``POST /<did>``; the directory's refusal becomes :class:`InvalidPLCOperation`."""
    url = f"{plc_url.rstrip('/')}/{did}"
    try:
        async with session.post(url, json=op, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = (await resp.content.read(limits.PLC_MAX_REQUEST_BYTES)).decode("utf-8", errors="replace")
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ResolutionError(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        body = parse_outside_json(text, ResolutionError) if text else {}
    except AtrepoError:
        body = {"message": text[:200]}
    if status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        shown = message[:200] if isinstance(message, str) and message else text[:200]
        raise InvalidPLCOperation(f"directory refused the operation (HTTP {status}): {shown}")
    return body if isinstance(body, dict) else {}
