"""``atrepo host ...``: maintenance of a repository host's store (SQLite: while the host is stopped).

``atrepo host seq-floor N`` is the remedy for a host restored from a backup.
Its event log then hands out seqs again that relays have already received
from the timeline the backup lost; a relay that sees a host's seq go
backwards stops trusting its cursor and parks the host (indigo's relay, the
reference's too), and the reference's own fix is editing its SQLite file by
hand. Raising the floor past the highest seq ever published makes the next
event newer than everything relays saw. The command never lowers the seq,
does its change in one transaction, and refuses to run on a store in use
(a running host holds it open).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import emit_json

__all__ = ["app"]

app = typer.Typer(
    help="Maintenance of a stopped repository host's data directory.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.callback()
def _host() -> None:
    """Maintenance of a stopped repository host's data directory."""


@app.command("seq-floor")
def seq_floor(
    next_seq: Annotated[
        int, typer.Argument(metavar="N", help="the next event seq must be at least this", min=1)
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="the host's data directory [./data, or as `serve` finds it]")
    ] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="the host's postgresql://... database [SQLite in --data]"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML configuration file (for data_dir, database)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Raise the event log's next seq to at least N (never lower it).

    Use it after restoring a host from a backup: pick N above the highest seq
    relays may have seen (the last seq in the host's logs, or a relay's
    cursor for it, plus a margin), then start the host. On SQLite the host
    must be stopped; on PostgreSQL (--database or ATREPO_DATABASE) running
    hosts may stay up, their commits are ordered after the change.
    """
    from ..host.config import load_config
    from ..store.postgres import PostgresStore
    from ..store.sqlite import raise_seq_floor

    cfg = load_config({"data_dir": data, "database": database}, config_file=config)
    data_dir = cfg.data_dir
    if cfg.database is None:
        result = raise_seq_floor(data_dir, next_seq)
        where = str(data_dir)
    else:
        store = PostgresStore(cfg.database, data_dir)
        try:
            result = store.raise_seq_floor(next_seq)
        finally:
            store.close()
        where = store.location
    if as_json:
        emit_json(
            {
                "ok": True,
                "dataDir": str(data_dir),
                "store": where,
                "oldNextSeq": result.old_next,
                "newNextSeq": result.new_next,
                "changed": result.changed,
            }
        )
    elif result.changed:
        print(f"next seq raised from {result.old_next} to {result.new_next} ({where})")
    else:
        print(f"next seq is already {result.old_next} (>= {next_seq}); nothing changed ({where})")
