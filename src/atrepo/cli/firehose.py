"""``atrepo firehose``: offline Sync 1.1 verification of recorded streams."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import AtrepoError, InvalidEvent, OutOfSync
from ..core.events import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    UnknownFrame,
    decode_frame,
    iter_stream_frames,
)
from ..core.keys import PublicKey, parse_did_key
from ..core.validate import (
    Chain,
    RepoState,
    check_chain,
    check_sync_chain,
    state_after,
    validate_commit,
    validate_sync,
)
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
                loaded = json.loads(keys_file.read_text())
            except (OSError, ValueError) as exc:
                raise typer.BadParameter(f"cannot read {keys_file}: {exc}", param_hint="--keys") from None
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


def _check_frame(frame_bytes: bytes, keys: _Keys, states: dict[str, RepoState]) -> dict[str, Any]:
    row: dict[str, Any] = {"seq": None, "type": None, "repo": None, "rev": None, "ok": True, "error": None}
    try:
        frame = decode_frame(frame_bytes)
        if isinstance(frame, CommitEvent):
            row.update(seq=frame.seq, type="#commit", repo=frame.repo, rev=frame.rev)
            verified = validate_commit(frame, keys.for_did(frame.repo))
            state = states.get(frame.repo)
            chain = check_chain(state, verified)
            if chain is not Chain.DUPLICATE:
                # Like a relay, record the new state even after a break, so one
                # missing commit fails one frame rather than every later one.
                states[frame.repo] = state_after(verified)
            if chain is Chain.OUT_OF_SYNC:
                assert state is not None
                raise OutOfSync(
                    f"commit since={frame.since} prevData={frame.prev_data} does not follow "
                    f"rev {state.rev} data {state.data}"
                )
        elif isinstance(frame, SyncEvent):
            row.update(seq=frame.seq, type="#sync", repo=frame.did, rev=frame.rev)
            synced = validate_sync(frame, keys.for_did(frame.did))
            if check_sync_chain(states.get(frame.did), synced) is not Chain.DUPLICATE:
                states[frame.did] = state_after(synced)
        elif isinstance(frame, IdentityEvent | AccountEvent):
            row.update(seq=frame.seq, type=frame.type_name, repo=frame.did)
        elif isinstance(frame, InfoEvent):
            row.update(type="#info")
        elif isinstance(frame, ErrorFrame):
            row.update(type="error", ok=False, error={"name": frame.error, "message": frame.message or ""})
        elif isinstance(frame, UnknownFrame):
            row.update(type=frame.t or f"op {frame.op}")
    except AtrepoError as exc:
        row["ok"] = False
        row["error"] = error_obj(exc)
        if row["repo"] is not None and row["type"] in ("#commit", "#sync") and not isinstance(exc, OutOfSync):
            # The invalid event is dropped; the repo's place in its chain is
            # unknown until its next valid event (sync.md §7), which then starts
            # afresh instead of failing as a break too.
            states.pop(row["repo"], None)
    return row


@app.command("verify")
def verify(
    file: Annotated[str, typer.Argument(help="stream file (varint-length-prefixed frames), or - for stdin")],
    key: Annotated[str | None, typer.Option("--key", help="did:key for every repository")] = None,
    keys: Annotated[Path | None, typer.Option("--keys", help="JSON file mapping DID -> did:key")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per frame, then a summary")] = False,
) -> None:
    """Sync 1.1 verification of every #commit and #sync, with chain checks per DID."""
    source = _Keys(key, keys)
    states: dict[str, RepoState] = {}
    counts = {"frames": 0, "ok": 0, "failed": 0, "commits": 0, "syncs": 0}
    repos: set[str] = set()
    stream_error: AtrepoError | None = None
    with open_stream(file) as stream, progress("verifying frames", None) as bar:
        try:
            for _offset, frame_bytes in iter_stream_frames(stream):
                row = _check_frame(frame_bytes, source, states)
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
