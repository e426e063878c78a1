"""Placeholder: the few ``app.bsky.*`` methods a host answers itself; see docs/host.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atrepo.xrpc import XrpcRouter

if TYPE_CHECKING:
    from .app import HostContext


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare this module's routes on ``router`` (none yet)."""
