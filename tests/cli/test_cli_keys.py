"""``atrepo key generate`` and ``atrepo key show`` through the real console script."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from atrepo.core.keys import PrivateKey, parse_did_key

ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ATREPO, *args], capture_output=True, text=True, timeout=60, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_generate_json(curve: str) -> None:
    proc = run("key", "generate", "--curve", curve, "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert set(obj) == {"curve", "did_key", "multikey", "private_key"}
    assert obj["curve"] == curve
    key = PrivateKey.from_multibase(obj["private_key"])
    assert key.curve == curve
    assert key.public_key.did_key() == obj["did_key"] == f"did:key:{obj['multikey']}"
    assert parse_did_key(obj["did_key"]) == key.public_key
    # the key signs what its did:key verifies
    assert key.public_key.verify(b"data", key.sign(b"data"))


def test_generate_text_defaults_to_k256() -> None:
    proc = run("key", "generate")
    assert proc.returncode == 0, proc.stderr
    did_key, private = proc.stdout.split()
    key = PrivateKey.from_multibase(private)
    assert key.curve == "k256"
    assert key.public_key.did_key() == did_key
    assert did_key.startswith("did:key:zQ3s")


def test_generate_out_file_and_show(tmp_path: Path) -> None:
    out = tmp_path / "signing.key"
    proc = run("key", "generate", "--curve", "p256", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert set(obj) == {"curve", "did_key", "multikey", "file"}
    assert obj["file"] == str(out)
    assert mode(out) == 0o600
    key = PrivateKey.from_multibase(out.read_text().strip())
    assert key.public_key.did_key() == obj["did_key"]
    assert obj["did_key"].startswith("did:key:zDn")

    shown = run("key", "show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == obj["did_key"]
    shown = run("key", "show", str(out), "--json")
    assert json.loads(shown.stdout) == {"curve": "p256", "did_key": obj["did_key"]}

    # text mode with --out prints only the public did:key
    again = tmp_path / "second.key"
    proc = run("key", "generate", "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [PrivateKey.from_multibase(again.read_text().strip()).public_key.did_key()]


def test_out_over_an_existing_file_is_made_private(tmp_path: Path) -> None:
    out = tmp_path / "existing.key"
    out.write_text("old\n")
    out.chmod(0o644)
    proc = run("key", "generate", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == 0o600
    assert out.read_text().startswith("z")


def test_errors(tmp_path: Path) -> None:
    proc = run("key", "generate", "--curve", "ed25519")
    assert proc.returncode == 2
    assert "curve must be k256 or p256" in proc.stderr

    missing = run("key", "show", str(tmp_path / "none.key"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: InputFileError: cannot read key file")

    bad = tmp_path / "bad.key"
    bad.write_text(PrivateKey.generate("k256").public_key.multikey() + "\n")
    proc = run("key", "show", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: InvalidKey:")
    assert "a public key" in proc.stderr

    proc = run("key", "generate", "--out", str(tmp_path / "no" / "such" / "dir.key"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
