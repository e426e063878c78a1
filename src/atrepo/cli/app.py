"""Root of the command tree; each area registers its own group here.

Groups are imported only when they run: ``atrepo key ...`` never pays for the
HTTP stack that ``atrepo plc ...`` needs, and start-up stays a small fraction
of a second. ``atrepo --help`` (or an unknown word) builds the whole tree.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import typer

from ..core.errors import AtrepoError

HELP = "AT Protocol repositories and sync: CAR files, keys, identities, firehoses."

#: Sub-command groups: name -> (module under atrepo.cli, Typer attribute).
GROUPS: dict[str, tuple[str, str]] = {
    "key": ("keys", "app"),
    "car": ("car", "app"),
    "firehose": ("firehose", "app"),
    "did": ("identity", "did_app"),
    "handle": ("identity", "handle_app"),
    "plc": ("identity", "plc_app"),
    "lexicon": ("lexicon", "app"),
    "account": ("account", "app"),
    "host": ("host_admin", "app"),
}
#: Single commands: name -> (module under atrepo.cli, function attribute).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "demo"),
    "serve": ("serve", "serve"),
    "relay": ("relay", "relay"),
    "sync": ("sync", "sync"),
}


def _load(module: str, attr: str) -> Any:
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


def build_app(only: str | None = None) -> typer.Typer:
    """The command tree; with ``only``, just that group or command (the one about to run)."""
    root = typer.Typer(
        name="atrepo",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: rendering it with rich costs ~70 ms a start
    )

    @root.callback()
    def _root() -> None:
        """AT Protocol repositories and sync: CAR files, keys, identities, firehoses."""

    for name, (module, attr) in GROUPS.items():
        if only is None or only == name:
            root.add_typer(_load(module, attr), name=name)
    for name, (module, attr) in COMMANDS.items():
        if only is None or only == name:
            root.command(name)(_load(module, attr))
    return root


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole tree, for callers that want the Typer object
        return build_app()
    raise AttributeError(name)


def main() -> None:
    """Console-script entry point: typed errors become one clear line and exit 1."""
    word = sys.argv[1] if len(sys.argv) > 1 else None
    only = word if word in GROUPS or word in COMMANDS else None
    try:
        build_app(only)()
    except AtrepoError as exc:
        if "--json" in sys.argv:
            print(json.dumps({"ok": False, "error": {"name": exc.name, "message": str(exc)}}))
        else:
            print(f"error: {exc.name}: {exc}", file=sys.stderr)
        sys.exit(1)
