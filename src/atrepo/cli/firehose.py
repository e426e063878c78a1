"""``atrepo firehose``: offline Sync 1.1 verification of recorded streams, and live ``tail``.

The consumer policy (what a valid, invalid or discontinuous event does to a
repository's state) is ``core.tracker``'s; this module reads frames, finds
keys and formats the tracker's outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
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
    write_stream_frame,
)
from ..core.jsonio import parse_outside_json
from ..core.keys import PublicKey, parse_did_key
from ..core.tracker import Outcome, RepoTracker, Verdict
from ..firehose.subscriber import CursorAction, FrameVerifier, Received, Subscriber, SubscriberHooks
from ..identity.resolver import DEFAULT_PLC_URL, DIDResolver
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


# --- tail: a live subscription ------------------------------------------------------------


class _TailHooks(SubscriberHooks):
    """Connection news on stderr; an error frame is remembered for the summary and exit code."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.infos: list[str] = []

    def connected(self, url: str, cursor: int | None) -> None:
        print(f"connected to {url}", file=sys.stderr)

    def disconnected(self, reason: str, failures: int) -> None:
        print(f"disconnected ({reason}); {failures} consecutive failures", file=sys.stderr)

    def error_frame(self, name: str, message: str | None) -> CursorAction:
        self.error = name + (f": {message}" if message else "")
        print(f"error frame {self.error}", file=sys.stderr)
        return super().error_frame(name, message)

    def info(self, name: str, message: str | None) -> None:
        self.infos.append(name)
        print(f"#info {name}" + (f": {message}" if message else ""), file=sys.stderr)

    def bad_frame(self, error: AtrepoError, raw: bytes) -> None:
        print(f"skipped an undecodable frame ({len(raw)} bytes): {error.name}: {error}", file=sys.stderr)

    def dropped(self, seq: int, why: str) -> None:
        print(f"dropped seq {seq}: {why}", file=sys.stderr)


def _tail_row(item: Received, outcome: Outcome | None) -> dict[str, Any]:
    """The JSON line of one event."""
    frame = item.frame
    row: dict[str, Any] = {
        "seq": item.seq,
        "type": frame.type_name if not isinstance(frame, ErrorFrame | UnknownFrame) else None,
        "did": item.did,
        "rev": frame.rev if isinstance(frame, CommitEvent | SyncEvent) else None,
        "ops": len(frame.ops) if isinstance(frame, CommitEvent) else None,
    }
    if outcome is not None:
        row["verdict"] = outcome.verdict.value
        row["error"] = error_obj(outcome.error)
    return row


def _tail_line(row: dict[str, Any]) -> str:
    """The human line of one event."""
    parts = [str(row["seq"]), str(row["type"]), str(row["did"])]
    if row["rev"] is not None:
        parts.append(f"rev={row['rev']}")
    if row["ops"] is not None:
        parts.append(f"ops={row['ops']}")
    if "verdict" in row:
        parts.append(row["verdict"].upper())
        if row["error"] is not None:
            parts.append(f"({row['error']['name']}: {row['error']['message']})")
    return " ".join(parts)


async def _tail(
    url: str,
    cursor: int | None,
    verify: bool,
    plc: str,
    save: Path | None,
    as_json: bool,
    limit: int | None,
    duration: float | None,
) -> dict[str, Any]:
    """Subscribe, print, save and verify until the limit, the duration, Ctrl-C or an error frame stops it."""
    hooks = _TailHooks()
    resolver = DIDResolver(plc_url=plc) if verify else None
    verifier = FrameVerifier(resolver) if resolver is not None else None
    out = save.open("wb") if save is not None else None
    events = 0
    invalid = 0
    last_seq = cursor  # the seq to resume after: the last event printed (one lane: stream order)
    subscriber: Subscriber

    async def handle(item: Received) -> None:
        nonlocal events, invalid, last_seq
        if limit is not None and events >= limit:
            return  # arrived before the stop took effect: not printed, not counted
        outcome = await verifier.check(item.frame) if verifier is not None else None
        if outcome is not None and outcome.verdict is Verdict.INVALID:
            invalid += 1
        events += 1
        last_seq = item.seq
        if out is not None:
            write_stream_frame(out, item.raw)
        row = _tail_row(item, outcome)
        if as_json:
            emit_json(row)
        else:
            print(_tail_line(row))
        sys.stdout.flush()
        if limit is not None and events >= limit:
            subscriber.stop()

    # one lane: events print and save in stream order (the tracker needs per-DID order only)
    subscriber = Subscriber(url, handle, cursor=cursor, hooks=hooks, lanes=1, max_in_flight=256)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, subscriber.stop)
    timer = loop.call_later(duration, subscriber.stop) if duration is not None else None
    started = time.monotonic()
    try:
        if limit is None or limit > 0:
            await subscriber.run()
    finally:
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if out is not None:
            out.close()
        if resolver is not None:
            await resolver.close()
    return {
        "summary": True,
        "events": events,
        "cursor": last_seq,
        "seconds": round(time.monotonic() - started, 3),
        "verified": verify,
        "invalid": invalid,
        "verdicts": dict(verifier.stats) if verifier is not None else None,
        "error_frame": hooks.error,
        "info": hooks.infos,
        "stats": subscriber.stats.as_dict(),
    }


@app.command("tail")
def tail(
    url: Annotated[str, typer.Argument(help="base URL (http://127.0.0.1:2583) or ws(s):// URL")],
    cursor: Annotated[int | None, typer.Option("--cursor", help="resume after this seq (0: all)")] = None,
    verify_: Annotated[
        bool, typer.Option("--verify", help="Sync 1.1 checks, keys from the DID documents")
    ] = False,
    plc: Annotated[str, typer.Option("--plc", help="PLC directory for --verify")] = DEFAULT_PLC_URL,
    save: Annotated[
        Path | None, typer.Option("--save", help="append raw frames to FILE (the format `verify` reads)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per event, then a summary")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="stop after N events")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0, help="stop after S seconds")] = None,
) -> None:
    """Subscribe to a firehose and print its events (Ctrl-C stops; the summary goes to stderr).

    Resumes across disconnects from the last event printed. Exit code 1 when
    --verify found an invalid event or the upstream sent an error frame
    (such as FutureCursor), else 0.
    """
    if cursor is not None and cursor < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--cursor")
    try:
        summary = asyncio.run(_tail(url, cursor, verify_, plc, save, as_json, limit, duration))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="URL") from None
    if as_json:
        emit_json(summary)
    else:
        stats = summary["stats"]
        line = (
            f"{summary['events']} events in {summary['seconds']} s; cursor {summary['cursor']}; "
            f"{stats['bad']} bad, {stats['dropped']} dropped, {stats['reconnects']} reconnects"
        )
        if summary["verified"]:
            line += f"; {summary['invalid']} invalid ({summary['verdicts']})"
        if summary["error_frame"]:
            line += f"; stopped by error frame {summary['error_frame']}"
        print(line, file=sys.stderr)
    raise typer.Exit(1 if summary["invalid"] or summary["error_frame"] else 0)
