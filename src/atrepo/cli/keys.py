"""``atrepo key``: signing keys and their did:key forms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import InputFileError
from ..core.keys import PrivateKey
from .output import emit_json

app = typer.Typer(
    help="Generate and inspect P-256 / secp256k1 signing keys.", no_args_is_help=True, rich_markup_mode=None
)


def load_private_key(path: Path) -> PrivateKey:
    """Read a key file: the private key's multibase text (``atrepo key generate --out``)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read key file {path}: {exc}") from None
    return PrivateKey.from_multibase(text.strip())


@app.command("generate")
def generate(
    curve: Annotated[str, typer.Option(help="k256 (secp256k1) or p256")] = "k256",
    out: Annotated[Path | None, typer.Option(help="write the private key here (mode 0600)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Make a new keypair and print its did:key (and the private key unless --out)."""
    if curve not in ("k256", "p256"):
        raise typer.BadParameter("curve must be k256 or p256")
    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    private = key.to_multibase()
    if out is not None:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
                fh.write(private + "\n")
        except OSError as exc:
            raise typer.BadParameter(f"cannot write {out}: {exc}", param_hint="--out") from None
    if as_json:
        obj = {"curve": curve, "did_key": key.public_key.did_key(), "multikey": key.public_key.multikey()}
        if out is None:
            obj["private_key"] = private
        else:
            obj["file"] = str(out)
        emit_json(obj)
        return
    print(key.public_key.did_key())
    if out is None:
        print(private)


@app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="private key file")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the public did:key of a private key file."""
    key = load_private_key(file)
    if as_json:
        emit_json({"curve": key.curve, "did_key": key.public_key.did_key()})
    else:
        print(key.public_key.did_key())
