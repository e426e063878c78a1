"""The ``atrepo`` command line: one entry point, one sub-command group per area."""

from __future__ import annotations

from .app import build_app, main

__all__ = ["build_app", "main"]
