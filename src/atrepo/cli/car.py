"""``atrepo car``: verify, list, export, diff and describe repository CAR files."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core import datamodel
from ..core.car import CarReader
from ..core.cid import CID
from ..core.errors import AtrepoError
from ..core.keys import PublicKey, parse_did_key
from ..core.verify import RepoSummary, iter_repo_records, verify_repo_car
from .files import open_input
from .output import emit_json, error_obj, progress

app = typer.Typer(
    help="Work with repository CAR files (full exports).", no_args_is_help=True, rich_markup_mode=None
)

KeyOpt = Annotated[str | None, typer.Option("--key", help="did:key the commit must be signed by")]
DidOpt = Annotated[str | None, typer.Option("--did", help="DID the repository must belong to")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
StrictShapeOpt = Annotated[
    bool,
    typer.Option(
        "--strict-shape",
        help="reject an untrimmed root (entry-less over the real root) instead of warning about it",
    ),
]


def _key(value: str | None) -> PublicKey | None:
    return parse_did_key(value) if value else None


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path) if path != "-" else None
    except OSError:
        return None


def _shape_warnings(summary: RepoSummary) -> list[str]:
    """Why the repository is valid but not in the shape this library writes."""
    if summary.canonical or summary.commit is None:
        return []
    return [
        f"root {summary.commit.data} is untrimmed (entry-less nodes over the real root); "
        "the reference implementation can leave it so, and it is accepted"
    ]


def _summary_obj(summary: RepoSummary, error: BaseException | None) -> dict[str, Any]:
    commit = summary.commit
    return {
        "ok": error is None,
        "did": commit.did if commit else None,
        "rev": commit.rev if commit else None,
        "commit": str(commit.cid) if commit else None,
        "data": str(commit.data) if commit else None,
        "records": summary.records,
        "blocks": summary.blocks,
        "canonical": summary.canonical,
        "warnings": _shape_warnings(summary),
        "error": error_obj(error),
    }


@app.command("verify")
def verify(
    file: Annotated[str, typer.Argument(help="CAR file, or - for stdin")],
    key: KeyOpt = None,
    did: DidOpt = None,
    as_json: JsonOpt = False,
    strict_shape: StrictShapeOpt = False,
    lexicons: Annotated[
        bool,
        typer.Option(
            "--lexicons",
            help="also validate each record against its lexicon (counts per collection; exit 1 if any fails)",
        ),
    ] = False,
    lexicon_dir: Annotated[
        Path | None,
        typer.Option("--lexicon-dir", help="with --lexicons: add the lexicon files under DIR", metavar="DIR"),
    ] = None,
    lenient: Annotated[
        bool, typer.Option("--lenient", help="with --lexicons: old data (int64, ISO datetimes, legacy blobs)")
    ] = False,
) -> None:
    """Check a repository is complete and valid (and signed by --key); exit 1 if not."""
    summary = RepoSummary()
    error: AtrepoError | None = None
    counts = None
    try:
        with open_input(file) as stream, progress("verifying", None) as bar:
            if lexicons:
                from .lexicon import CollectionCounts, registry_for

                counts = CollectionCounts(registry_for(lexicon_dir), strict=not lenient)
                for path, _, data in iter_repo_records(
                    stream, key=_key(key), did=did, summary=summary, strict_shape=strict_shape
                ):
                    counts.add(path, data)
                    bar.advance()
            else:
                for _ in verify_repo_car(
                    stream, key=_key(key), did=did, summary=summary, strict_shape=strict_shape
                ):
                    bar.advance()
    except AtrepoError as exc:
        error = exc
    records_ok = counts is None or counts.invalid == 0
    if as_json:
        obj = _summary_obj(summary, error)
        if counts is not None:
            obj["lexicons"] = counts.report()
            obj["ok"] = obj["ok"] and records_ok
        emit_json(obj)
    elif error is None:
        commit = summary.commit
        assert commit is not None
        signed = " (signature checked)" if key else ""
        print(
            f"ok: {commit.did} rev {commit.rev}: {summary.records} records, {summary.blocks} blocks{signed}"
        )
        if summary.unreferenced:
            print(f"note: {summary.unreferenced} unreferenced blocks ignored")
        for warning in _shape_warnings(summary):
            print(f"warning: {warning}", file=sys.stderr)
        if counts is not None:
            print(f"lexicons: {'all records valid' if records_ok else f'{counts.invalid} invalid records'}")
            for line in counts.lines():
                print(line)
    else:
        print(f"invalid: {error.name}: {error}", file=sys.stderr)
    raise typer.Exit(0 if error is None and records_ok else 1)


@app.command("ls")
def ls(
    file: Annotated[str, typer.Argument(help="CAR file, or - for stdin")],
    key: KeyOpt = None,
) -> None:
    """One line per record: collection/rkey<TAB>cid, in key order."""
    out = sys.stdout
    with open_input(file) as stream:
        for path, cid in verify_repo_car(stream, key=_key(key)):
            out.write(f"{path}\t{cid}\n")


@app.command("export")
def export(
    file: Annotated[str, typer.Argument(help="CAR file, or - for stdin")],
    out: Annotated[Path | None, typer.Option(help="write DIR/<collection>/<rkey>.json")] = None,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help='one {"uri","cid","value"} per line (default)')
    ] = False,
    key: KeyOpt = None,
) -> None:
    """Records as data-model JSON."""
    summary = RepoSummary()
    with open_input(file) as stream, progress("exporting", None) as bar:
        for path, cid, data in iter_repo_records(stream, key=_key(key), summary=summary):
            value = datamodel.decode_to_json(data)
            bar.advance()
            if out is not None and not jsonl:
                collection, rkey = path.split("/", 1)
                folder = out / collection
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{rkey}.json").write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n")
            else:
                did = summary.commit.did if summary.commit else ""
                emit_json({"uri": f"at://{did}/{path}", "cid": str(cid), "value": value})


def _merge(old: Iterator[tuple[str, CID]], new: Iterator[tuple[str, CID]]) -> Iterator[dict[str, Any]]:
    """Record ops turning one sorted stream into another, in one pass."""
    a = next(old, None)
    b = next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield {"action": "delete", "path": a[0], "cid": None, "prev": str(a[1])}
            a = next(old, None)
        elif a is None or b[0] < a[0]:
            yield {"action": "create", "path": b[0], "cid": str(b[1]), "prev": None}
            b = next(new, None)
        else:
            if a[1] != b[1]:
                yield {"action": "update", "path": a[0], "cid": str(b[1]), "prev": str(a[1])}
            a = next(old, None)
            b = next(new, None)


@app.command("diff")
def diff(
    old: Annotated[str, typer.Argument(help="earlier CAR file")],
    new: Annotated[str, typer.Argument(help="later CAR file")],
    as_json: JsonOpt = False,
) -> None:
    """The record operations that turn OLD into NEW (both fully verified)."""
    with open_input(old) as a, open_input(new) as b:
        for op in _merge(verify_repo_car(a), verify_repo_car(b)):
            if as_json:
                emit_json(op)
            else:
                print(f"{op['action']}\t{op['path']}\t{op['cid'] or op['prev']}")


@app.command("info")
def info(
    file: Annotated[str, typer.Argument(help="CAR file, or - for stdin")],
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Header, root, commit fields, counts and tree height."""
    summary = RepoSummary()
    error: AtrepoError | None = None
    collections: dict[str, int] = {}
    with open_input(file) as stream:
        start = stream.tell()
        header = CarReader(stream)
        roots = [str(r) for r in header.roots]
        version = header.header.get("version")
        stream.seek(start)
        try:
            for path, _cid in verify_repo_car(stream, key=_key(key), summary=summary):
                name = path.split("/", 1)[0]
                collections[name] = collections.get(name, 0) + 1
        except AtrepoError as exc:
            error = exc
    commit = summary.commit
    obj: dict[str, Any] = {
        "version": version,
        "roots": roots,
        "commit": None
        if commit is None
        else {
            "cid": str(commit.cid),
            "did": commit.did,
            "version": commit.version,
            "data": str(commit.data),
            "rev": commit.rev,
            "prev": str(commit.prev) if commit.prev else None,
            "sig": commit.sig.hex(),
        },
        "records": summary.records,
        "nodes": summary.nodes,
        "blocks": summary.blocks,
        "unreferenced": summary.unreferenced,
        "height": summary.height,
        "collections": collections,
        "size": _file_size(file),
        "ok": error is None,
        "error": error_obj(error),
    }
    if as_json:
        emit_json(obj)
    else:
        print(f"CAR version {version}, roots: {', '.join(roots) or '(none)'}")
        if commit is not None:
            print(f"commit {commit.cid}")
            print(f"  did      {commit.did}")
            print(f"  rev      {commit.rev}")
            print(f"  data     {commit.data}")
            print(f"  version  {commit.version}")
        print(
            f"records {summary.records}, MST nodes {summary.nodes}, blocks {summary.blocks}, "
            f"unreferenced {summary.unreferenced}, tree height {summary.height}"
        )
        for name, count in sorted(collections.items()):
            print(f"  {name}: {count}")
        if error is not None:
            print(f"invalid: {error.name}: {error}", file=sys.stderr)
    raise typer.Exit(0 if error is None else 1)
