"""The ``atrepo`` command line: one entry point, one sub-command group per area."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
