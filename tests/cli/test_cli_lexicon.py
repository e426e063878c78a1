"""``atrepo lexicon check|validate`` and ``car verify --lexicons`` through the real console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from atrepo.core.car import write_car
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write

ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")
CATALOG = Path(__file__).resolve().parents[1] / "interop" / "lexicon" / "catalog"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
NOW = "2026-11-30T12:00:00.000Z"
LIKE: dict[str, Any] = {
    "$type": "app.bsky.feed.like",
    "subject": {"uri": f"at://{DID}/app.bsky.feed.post/3kz7lqvwc6d2a", "cid": CID},
    "createdAt": NOW,
}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ATREPO, *args], input=stdin, capture_output=True, timeout=60, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


# --- lexicon validate --------------------------------------------------------------


def test_validate_valid_record(tmp_path: Path) -> None:
    proc = run(
        "lexicon", "validate", "--nsid", "app.bsky.feed.like", str(write_json(tmp_path / "r.json", LIKE))
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok:")


def test_validate_invalid_record_names_path_and_rule(tmp_path: Path) -> None:
    bad = {**LIKE, "subject": {"uri": LIKE["subject"]["uri"], "cid": "not-a-cid"}}
    path = write_json(tmp_path / "bad.json", bad)
    proc = run("lexicon", "validate", "--nsid", "app.bsky.feed.like", str(path))
    assert proc.returncode == 1
    assert "subject/cid" in proc.stderr
    proc = run("lexicon", "validate", "--json", "--nsid", "app.bsky.feed.like", str(path))
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    assert out["error"]["name"] == "InvalidLexiconData"
    assert (out["error"]["path"], out["error"]["rule"]) == ("subject/cid", "format")


def test_validate_json_ok_shape(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", LIKE)
    proc = run(
        "lexicon", "validate", "--json", "--nsid", "app.bsky.feed.like", "--rkey", "3kz7lqvwc6d2a", str(path)
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True, "error": None}


def test_validate_rkey_against_key_type(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", LIKE)
    proc = run("lexicon", "validate", "--json", "--nsid", "app.bsky.feed.like", "--rkey", "self", str(path))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["rule"] == "key"
    profile = write_json(tmp_path / "p.json", {"$type": "app.bsky.actor.profile", "displayName": "Alice"})
    assert (
        run(
            "lexicon", "validate", "--nsid", "app.bsky.actor.profile", "--rkey", "self", str(profile)
        ).returncode
        == 0
    )
    proc = run(
        "lexicon", "validate", "--nsid", "app.bsky.actor.profile", "--rkey", "3kz7lqvwc6d2a", str(profile)
    )
    assert proc.returncode == 1


def test_validate_from_stdin() -> None:
    proc = run("lexicon", "validate", "--nsid", "app.bsky.feed.like", "-", stdin=json.dumps(LIKE).encode())
    assert proc.returncode == 0, proc.stderr


def test_validate_unknown_nsid_and_bad_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {**LIKE, "$type": "com.example.nothing"})
    proc = run("lexicon", "validate", "--json", "--nsid", "com.example.nothing", str(path))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["name"] == "LexiconNotFound"
    broken = tmp_path / "broken.json"
    broken.write_text('{"$type": ')
    proc = run("lexicon", "validate", "--nsid", "app.bsky.feed.like", str(broken))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_validate_with_extra_lexicon_dir(tmp_path: Path) -> None:
    lexdir = tmp_path / "lex"
    lexdir.mkdir()
    write_json(
        lexdir / "thing.json",
        {
            "lexicon": 1,
            "id": "com.example.thing",
            "defs": {
                "main": {
                    "type": "record",
                    "key": "any",
                    "record": {
                        "type": "object",
                        "required": ["n"],
                        "properties": {"n": {"type": "integer", "maximum": 5}},
                    },
                }
            },
        },
    )
    good = write_json(tmp_path / "good.json", {"$type": "com.example.thing", "n": 5})
    bad = write_json(tmp_path / "bad.json", {"$type": "com.example.thing", "n": 6})
    args = ("lexicon", "validate", "--lexicons", str(lexdir), "--nsid", "com.example.thing")
    assert run(*args, str(good)).returncode == 0
    proc = run(*args, "--json", str(bad))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["rule"] == "maximum"


def test_validate_lenient_reads_old_datetimes(tmp_path: Path) -> None:
    path = write_json(tmp_path / "old.json", {**LIKE, "createdAt": "2023-04-01T10:00:00"})  # no timezone
    assert run("lexicon", "validate", "--nsid", "app.bsky.feed.like", str(path)).returncode == 1
    assert run("lexicon", "validate", "--lenient", "--nsid", "app.bsky.feed.like", str(path)).returncode == 0


# --- lexicon check -------------------------------------------------------------------


def test_check_catalog_files() -> None:
    files = sorted(str(p) for p in CATALOG.glob("*.json"))
    proc = run("lexicon", "check", *files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok:") == len(files)


def test_check_reports_invalid_and_unresolved(tmp_path: Path) -> None:
    good = write_json(
        tmp_path / "good.json", {"lexicon": 1, "id": "com.example.good", "defs": {"n": {"type": "integer"}}}
    )
    bad = write_json(
        tmp_path / "bad.json",
        {"lexicon": 1, "id": "com.example.bad", "defs": {"x": {"type": "ref", "ref": "#n"}}},
    )
    dangling = write_json(
        tmp_path / "dangling.json",
        {
            "lexicon": 1,
            "id": "com.example.dangling",
            "defs": {
                "o": {"type": "object", "properties": {"r": {"type": "ref", "ref": "com.example.nowhere#x"}}}
            },
        },
    )
    proc = run("lexicon", "check", "--json", str(good), str(bad), str(dangling))
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    by_file = {Path(r["file"]).name: r for r in out["files"]}
    assert by_file["good.json"]["ok"] is True
    assert by_file["bad.json"]["error"]["rule"] == "def-type"
    assert by_file["dangling.json"]["error"]["rule"] == "unresolved-ref"
    assert by_file["dangling.json"]["error"]["path"] == "defs/o/properties/r/ref"


def test_check_missing_file(tmp_path: Path) -> None:
    proc = run("lexicon", "check", str(tmp_path / "nope.json"))
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr


# --- car verify --lexicons ----------------------------------------------------------------


def test_car_verify_lexicons_counts_per_collection(tmp_path: Path) -> None:
    key = PrivateKey.generate("k256")
    post = {"$type": "app.bsky.feed.post", "text": "hello", "createdAt": NOW}
    writes = [Write("create", "app.bsky.feed.post", f"3kz7lqvwc6d{c}a", post) for c in "234567"]
    writes.append(Write("create", "app.bsky.feed.post", "3kz7lqvwc6dza", {**post, "text": "x" * 301}))
    writes.append(
        Write(
            "create",
            "app.bsky.feed.post",
            "3kz7lqvwc6dyb",
            {"$type": "app.bsky.feed.post", "text": "no date"},
        )
    )
    writes.append(Write("create", "app.bsky.feed.like", "3kz7lqvwc6d2a", LIKE))
    writes.append(Write("create", "com.example.custom", "k1", {"$type": "com.example.custom", "x": 1}))
    repo = Repo.create(DID, key, writes).repo
    car = tmp_path / "repo.car"
    car.write_bytes(write_car([repo.commit.cid], list(repo.export_blocks())))

    assert run("car", "verify", str(car)).returncode == 0  # the repository itself is fine
    proc = run("car", "verify", "--lexicons", "--json", str(car))
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["error"] is None and out["records"] == 10
    lex = out["lexicons"]
    assert {k: (v["valid"], v["invalid"], v["unknown"]) for k, v in lex.items()} == {
        "app.bsky.feed.like": (1, 0, 0),
        "app.bsky.feed.post": (6, 2, 0),
        "com.example.custom": (0, 0, 1),
    }
    errors = {e["rkey"]: (e["path"], e["rule"]) for e in lex["app.bsky.feed.post"]["errors"]}
    assert errors == {"3kz7lqvwc6dza": ("text", "maxGraphemes"), "3kz7lqvwc6dyb": ("createdAt", "required")}
    text = run("car", "verify", "--lexicons", str(car))
    assert text.returncode == 1
    assert "app.bsky.feed.post: 6 valid, 2 invalid, 0 unknown lexicon" in text.stdout


def test_car_verify_lexicons_demo_repository(tmp_path: Path) -> None:
    """Every record the demo generates is valid against the shipped lexicons."""
    assert run("demo", "--out", str(tmp_path / "demo")).returncode == 0
    proc = run("car", "verify", "--lexicons", "--json", str(tmp_path / "demo" / "repo.car"))
    assert proc.returncode == 0, proc.stdout
    lex = json.loads(proc.stdout)["lexicons"]
    assert all(v["invalid"] == 0 and v["unknown"] == 0 for v in lex.values())
    assert sum(v["valid"] for v in lex.values()) > 0
