"""Root of the command tree; each area registers its own group here."""

from __future__ import annotations

import json
import sys

import typer

from ..core.errors import AtrepoError
from . import car as car_cmd
from . import demo as demo_cmd
from . import firehose as firehose_cmd
from . import identity as identity_cmd
from . import keys as keys_cmd

app = typer.Typer(
    name="atrepo",
    help="AT Protocol repositories and sync: CAR files, keys, identities, firehoses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_cmd.app, name="key")
app.add_typer(car_cmd.app, name="car")
app.add_typer(firehose_cmd.app, name="firehose")
app.add_typer(identity_cmd.did_app, name="did")
app.add_typer(identity_cmd.handle_app, name="handle")
app.add_typer(identity_cmd.plc_app, name="plc")
app.command("demo")(demo_cmd.demo)


def main() -> None:
    """Console-script entry point: typed errors become one clear line and exit 1."""
    try:
        app()
    except AtrepoError as exc:
        if "--json" in sys.argv:
            print(json.dumps({"ok": False, "error": {"name": exc.name, "message": str(exc)}}))
        else:
            print(f"error: {exc.name}: {exc}", file=sys.stderr)
        sys.exit(1)
