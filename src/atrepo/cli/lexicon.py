"""``atrepo lexicon``: check lexicon documents and validate records against them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core import datamodel, limits
from ..core.errors import AtrepoError, InvalidLexicon, InvalidLexiconData
from ..core.lexicon import LexiconDoc, Registry
from ..core.lexicon.records import check_record_key
from .files import open_input
from .output import emit_json, error_obj

app = typer.Typer(
    help="Lexicons: check schemas, validate records.", no_args_is_help=True, rich_markup_mode=None
)

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
LexiconsOpt = Annotated[
    Path | None,
    typer.Option("--lexicons", help="add the lexicon files under DIR to the built-in set", metavar="DIR"),
]
LenientOpt = Annotated[
    bool,
    typer.Option("--lenient", help="read old data: any int64, ISO datetimes, legacy blobs"),
]


def registry_for(extra_dir: Path | None) -> Registry:
    """The built-in lexicons, plus those under ``extra_dir`` (which win on the same id)."""
    from ..lexicons import builtin_registry, load_directory, registry_with

    if extra_dir is None:
        return builtin_registry()
    return registry_with(load_directory(extra_dir))


def error_detail(exc: BaseException) -> dict[str, Any] | None:
    """``error_obj`` plus the path and rule of lexicon errors."""
    out: dict[str, Any] | None = error_obj(exc)
    if out is not None and isinstance(exc, InvalidLexiconData | InvalidLexicon):
        out["path"] = exc.path
        out["rule"] = exc.rule
    return out


@app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="lexicon JSON files")],
    as_json: JsonOpt = False,
) -> None:
    """Check lexicon documents: every rule of the language, and that their refs resolve.

    Refs may point at the built-in lexicons or at the other files given. Exit 1
    if any file is invalid.
    """
    from ..lexicons import load_file, registry_with

    results: list[dict[str, Any]] = []
    docs: list[tuple[Path, LexiconDoc]] = []
    for path in files:
        try:
            doc = load_file(path)
        except AtrepoError as exc:
            results.append({"file": str(path), "ok": False, "id": None, "error": error_detail(exc)})
            continue
        docs.append((path, doc))
        results.append({"file": str(path), "ok": True, "id": doc.id, "defs": len(doc.defs), "error": None})
    if docs:
        # refs: each file against the built-ins plus all the good files
        try:
            registry_with(doc for _, doc in docs)
        except InvalidLexicon as exc:
            for result in results:
                if result["id"] == exc.lexicon:
                    result.update(ok=False, error=error_detail(exc))
    ok = all(r["ok"] for r in results)
    if as_json:
        emit_json({"ok": ok, "files": results})
    else:
        for r in results:
            if r["ok"]:
                print(f"ok: {r['file']}: {r['id']} ({r['defs']} defs)")
            else:
                print(f"invalid: {r['file']}: {r['error']['message']}", file=sys.stderr)
    raise typer.Exit(0 if ok else 1)


@app.command("validate")
def validate(
    record: Annotated[str, typer.Argument(help="record JSON file, or - for stdin")],
    nsid: Annotated[str, typer.Option("--nsid", help="the record's collection (its lexicon)")],
    rkey: Annotated[str | None, typer.Option("--rkey", help="also check this record key")] = None,
    lexicons: LexiconsOpt = None,
    lenient: LenientOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Validate one record against its lexicon: exit 0 if valid, 1 if not (with path and rule)."""
    error: AtrepoError | None = None
    try:
        registry = registry_for(lexicons)
        with open_input(record) as stream:
            data = stream.read(limits.MAX_RECORD_JSON_BYTES + 1)
        value = datamodel.parse_json(data)
        registry.validate_record(nsid, value, strict=not lenient)
        if rkey is not None:
            schema = registry.record_def(nsid)
            assert schema is not None  # validate_record raised otherwise
            check_record_key(nsid, schema.key, rkey)
    except AtrepoError as exc:
        error = exc
    if as_json:
        emit_json({"ok": error is None, "error": error_detail(error) if error else None})
    elif error is None:
        print(f"ok: valid {nsid} record" + (f" (key {rkey})" if rkey else ""))
    else:
        print(f"invalid: {error}", file=sys.stderr)
    raise typer.Exit(0 if error is None else 1)


class CollectionCounts:
    """Per-collection record validation counts for ``car verify --lexicons``."""

    #: Errors kept per collection (the first ones met).
    KEEP_ERRORS = 3

    def __init__(self, registry: Registry, *, strict: bool = True) -> None:
        self.registry = registry
        self.strict = strict
        self.counts: dict[str, dict[str, Any]] = {}

    def add(self, path: str, data: bytes) -> None:
        from ..core import cbor

        collection, _, rkey = path.partition("/")
        entry = self.counts.get(collection)
        if entry is None:
            entry = self.counts[collection] = {"valid": 0, "invalid": 0, "unknown": 0, "errors": []}
        if self.registry.record_def(collection) is None:
            entry["unknown"] += 1
            return
        try:
            value = cbor.decode(data, max_bytes=limits.MAX_RECORD_BYTES)
            datamodel.validate_value(value, top_level_object=True)
            self.registry.validate_record(collection, value, strict=self.strict)
        except AtrepoError as exc:
            entry["invalid"] += 1
            if len(entry["errors"]) < self.KEEP_ERRORS:
                entry["errors"].append({"rkey": rkey, **(error_detail(exc) or {})})
            return
        entry["valid"] += 1

    @property
    def invalid(self) -> int:
        return sum(e["invalid"] for e in self.counts.values())

    def report(self) -> dict[str, dict[str, Any]]:
        return dict(sorted(self.counts.items()))

    def lines(self) -> Sequence[str]:
        out = []
        for collection, e in self.report().items():
            out.append(
                f"  {collection}: {e['valid']} valid, {e['invalid']} invalid, {e['unknown']} unknown lexicon"
            )
            out.extend(f"    {err['rkey']}: {err['message']}" for err in e["errors"])
        return out
