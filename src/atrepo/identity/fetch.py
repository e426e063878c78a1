"""Bounded HTTP GETs for resolution: capped time, capped bytes, typed errors.

Every byte a resolver reads comes from a host someone else controls; a slow or
endless response must cost at most ``timeout`` seconds and ``max_bytes`` bytes,
and every network failure surfaces as :class:`ResolutionError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from atrepo.core.errors import LimitExceeded, ResolutionError

__all__ = ["get_bounded"]

_CHUNK = 16 * 1024


async def get_bounded(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    max_redirects: int = 0,
) -> tuple[int, bytes]:
    """GET ``url``; return (status, body). Raises :class:`ResolutionError` or
    :class:`LimitExceeded` (body larger than ``max_bytes``)."""
    try:
        async with asyncio.timeout(timeout):
            async with session.get(
                url,
                headers=headers,
                allow_redirects=max_redirects > 0,
                max_redirects=max(max_redirects, 1),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                declared = resp.content_length
                if declared is not None and declared > max_bytes:
                    raise LimitExceeded("response bytes", declared, max_bytes, url)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise LimitExceeded("response bytes", len(body), max_bytes, url)
                return resp.status, bytes(body)
    except TimeoutError:
        raise ResolutionError(f"{url}: no answer within {timeout:g} s") from None
    except aiohttp.TooManyRedirects:
        raise ResolutionError(f"{url}: more than {max_redirects} redirects") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ResolutionError(f"{url}: {type(exc).__name__}: {exc}") from None
