"""``atrepo firehose``: offline Sync 1.1 verification of recorded streams.

The consumer policy (what a valid, invalid or discontinuous event does to a
repository's state) is ``core.tracker``'s; this module reads frames, finds
keys and formats the tracker's outcomes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import AtrepoError, InputFileError, InvalidEvent
from ..core.events import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    Frame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    UnknownFrame,
    decode_frame,
    iter_stream_frames,
)
from ..core.jsonio import parse_outside_json
from ..core.keys import PublicKey, parse_did_key
from ..core.tracker import Outcome, RepoTracker
from .files import open_stream
from .output import emit_json, error_obj, progress

app = typer.Typer(
    help="Recorded firehose streams (length-prefixed frames).", no_args_is_help=True, rich_markup_mode=None
)


class _Keys:
    """Where signing keys come from: one --key, a --keys map, or none (skip signatures)."""

    def __init__(self, key: str | None, keys_file: Path | None) -> None:
        self.single = parse_did_key(key) if key else None
        self.table: dict[str, str] | None = None
        if keys_file is not None:
            try:
                text = keys_file.read_bytes()
            except OSError as exc:
                raise typer.BadParameter(f"cannot read {keys_file}: {exc}", param_hint="--keys") from None
            loaded = parse_outside_json(text, lambda why: InputFileError(f"--keys {keys_file}: {why}"))
            if not isinstance(loaded, dict):
                raise typer.BadParameter("--keys must be a JSON object mapping DID to did:key")
            self.table = {str(k): str(v) for k, v in loaded.items()}

    @property
    def checking(self) -> bool:
        return self.single is not None or self.table is not None

    def for_did(self, did: str) -> PublicKey | None:
        if self.table is not None:
            text = self.table.get(did)
            if text is None:
                raise InvalidEvent(f"signature: no key for {did} in --keys")
            return parse_did_key(text)
        return self.single


def _check_frame(frame_bytes: bytes, keys: _Keys, tracker: RepoTracker) -> dict[str, Any]:
    """One output row: what the frame is, and whether it passed."""
    row: dict[str, Any] = {"seq": None, "type": None, "repo": None, "rev": None, "ok": True, "error": None}
    try:
        frame = decode_frame(frame_bytes)
    except AtrepoError as exc:
        row.update(ok=False, error=error_obj(exc))
        return row
    row.update(_describe(frame))
    outcome = _process(frame, keys, tracker)
    if isinstance(frame, ErrorFrame):
        row.update(ok=False, error={"name": frame.error, "message": frame.message or ""})
    elif outcome.error is not None:
        row.update(ok=False, error=error_obj(outcome.error))
    return row


def _process(frame: Frame, keys: _Keys, tracker: RepoTracker) -> Outcome:
    """Hand the frame to the tracker with its repository's key (keys are fixed: no retry)."""
    if isinstance(frame, CommitEvent | SyncEvent):
        try:
            key = keys.for_did(frame.repo if isinstance(frame, CommitEvent) else frame.did)
        except AtrepoError as exc:
            return tracker.reject(frame, exc)
        return tracker.process(frame, key)
    return tracker.process(frame, None)


def _describe(frame: Frame) -> dict[str, Any]:
    """The row fields that name a frame."""
    if isinstance(frame, CommitEvent):
        return {"seq": frame.seq, "type": "#commit", "repo": frame.repo, "rev": frame.rev}
    if isinstance(frame, SyncEvent):
        return {"seq": frame.seq, "type": "#sync", "repo": frame.did, "rev": frame.rev}
    if isinstance(frame, IdentityEvent | AccountEvent):
        return {"seq": frame.seq, "type": frame.type_name, "repo": frame.did}
    if isinstance(frame, InfoEvent):
        return {"type": "#info"}
    if isinstance(frame, ErrorFrame):
        return {"type": "error"}
    assert isinstance(frame, UnknownFrame)
    return {"type": frame.t or f"op {frame.op}"}


@app.command("verify")
def verify(
    file: Annotated[str, typer.Argument(help="stream file (varint-length-prefixed frames), or - for stdin")],
    key: Annotated[str | None, typer.Option("--key", help="did:key for every repository")] = None,
    keys: Annotated[Path | None, typer.Option("--keys", help="JSON file mapping DID -> did:key")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per frame, then a summary")] = False,
    strict_shape: Annotated[
        bool, typer.Option("--strict-shape", help="reject commits whose tree root is left untrimmed")
    ] = False,
) -> None:
    """Sync 1.1 verification of every #commit and #sync, with chain checks per DID."""
    source = _Keys(key, keys)
    tracker = RepoTracker(strict_shape=strict_shape)
    counts = {"frames": 0, "ok": 0, "failed": 0, "commits": 0, "syncs": 0}
    repos: set[str] = set()
    stream_error: AtrepoError | None = None
    with open_stream(file) as stream, progress("verifying frames", None) as bar:
        try:
            for _offset, frame_bytes in iter_stream_frames(stream):
                row = _check_frame(frame_bytes, source, tracker)
                bar.advance()
                counts["frames"] += 1
                counts["ok" if row["ok"] else "failed"] += 1
                if row["type"] == "#commit":
                    counts["commits"] += 1
                elif row["type"] == "#sync":
                    counts["syncs"] += 1
                if row["type"] in ("#commit", "#sync") and row["repo"] is not None:
                    repos.add(row["repo"])
                if as_json:
                    emit_json(row)
                elif not row["ok"]:
                    err = row["error"]
                    print(f"seq {row['seq']} {row['type']} {row['repo']}: {err['name']}: {err['message']}")
        except AtrepoError as exc:
            stream_error = exc
    summary = {
        "summary": True,
        **counts,
        "repos": len(repos),
        "signatures": "checked" if source.checking else "skipped",
        "error": error_obj(stream_error),
    }
    if as_json:
        emit_json(summary)
    else:
        print(
            f"{counts['frames']} frames: {counts['ok']} ok, {counts['failed']} failed "
            f"({counts['commits']} commits, {counts['syncs']} syncs, {len(repos)} repos; "
            f"signatures {summary['signatures']})"
        )
        if stream_error is not None:
            print(f"stream error: {stream_error.name}: {stream_error}", file=sys.stderr)
    raise typer.Exit(0 if counts["failed"] == 0 and stream_error is None else 1)
