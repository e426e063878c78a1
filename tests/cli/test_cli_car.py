"""``atrepo car``: verify, ls, export, diff and info through the real console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from atrepo.core import cbor
from atrepo.core.car import write_car
from atrepo.core.datamodel import value_to_json
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write

ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
VERIFY_KEYS = {"ok", "did", "rev", "commit", "data", "records", "blocks", "canonical", "warnings", "error"}


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``atrepo`` script; text output, bytes input."""
    proc = subprocess.run([ATREPO, *args], input=stdin, capture_output=True, timeout=60, cwd=cwd, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text, "tags": ["a", "b"], "n": len(text)}


def write_repo(path: Path, repo: Repo, *, reverse: bool = False) -> Path:
    blocks = list(repo.export_blocks())
    if reverse:
        blocks = [blocks[0], *blocks[:0:-1]]
    path.write_bytes(write_car([repo.commit.cid], blocks))
    return path


class Fixture:
    """Two versions of one repository, written as CAR files."""

    def __init__(self, root: Path) -> None:
        self.key = PrivateKey.generate("k256")
        writes = [Write("create", POST, f"p{i:03d}", post(f"post {i}")) for i in range(60)]
        writes += [Write("create", LIKE, f"l{i:03d}", {"$type": LIKE, "i": i}) for i in range(20)]
        self.old = Repo.create(DID, self.key, writes).repo
        self.new = self.old.apply_writes(
            [
                Write("create", POST, "p999", post("brand new")),
                Write("create", "app.bsky.graph.follow", "f1", {"$type": "app.bsky.graph.follow"}),
                Write("update", POST, "p010", post("edited")),
                Write("delete", POST, "p020"),
                Write("delete", LIKE, "l005"),
            ],
            self.key,
        ).repo
        self.old_car = write_repo(root / "old.car", self.old)
        self.new_car = write_repo(root / "new.car", self.new)
        self.shuffled_car = write_repo(root / "shuffled.car", self.new, reverse=True)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("cars"))


# --- verify ---------------------------------------------------------------------------


def test_verify_ok_text(fx: Fixture) -> None:
    proc = run("car", "verify", str(fx.new_car), "--key", fx.key.public_key.did_key(), "--did", DID)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {DID} rev {fx.new.rev}: 80 records")
    assert "signature checked" in proc.stdout


def test_verify_json_fields(fx: Fixture) -> None:
    for car in (fx.new_car, fx.shuffled_car):
        proc = run("car", "verify", str(car), "--json", "--key", fx.key.public_key.did_key())
        assert proc.returncode == 0, proc.stderr
        (obj,) = json_lines(proc.stdout)
        assert set(obj) == VERIFY_KEYS
        assert obj == {
            "ok": True,
            "did": DID,
            "rev": fx.new.rev,
            "commit": str(fx.new.commit.cid),
            "data": str(fx.new.data),
            "records": 80,
            "blocks": len(list(fx.new.export_blocks())),
            "canonical": True,
            "warnings": [],
            "error": None,
        }


def test_verify_from_stdin(fx: Fixture) -> None:
    for car in (fx.new_car, fx.shuffled_car):
        proc = run("car", "verify", "-", "--json", stdin=car.read_bytes())
        assert proc.returncode == 0, proc.stderr
        assert json_lines(proc.stdout)[0]["records"] == 80


def test_verify_wrong_key_and_did(fx: Fixture) -> None:
    other = PrivateKey.generate("p256").public_key.did_key()
    proc = run("car", "verify", str(fx.new_car), "--json", "--key", other)
    assert proc.returncode == 1
    (obj,) = json_lines(proc.stdout)
    assert set(obj) == VERIFY_KEYS
    assert obj["ok"] is False
    assert obj["error"]["name"] == "InvalidSignature"
    assert "does not verify" in obj["error"]["message"]
    assert set(obj["error"]) == {"name", "message"}

    proc = run("car", "verify", str(fx.new_car), "--did", "did:plc:someoneelse")
    assert proc.returncode == 1
    assert "invalid: InvalidCommit:" in proc.stderr
    assert "expected did:plc:someoneelse" in proc.stderr


def test_verify_broken_files(fx: Fixture, tmp_path: Path) -> None:
    data = fx.new_car.read_bytes()
    truncated = tmp_path / "truncated.car"
    truncated.write_bytes(data[: len(data) // 2 + 7])
    proc = run("car", "verify", str(truncated), "--json")
    assert proc.returncode == 1
    (obj,) = json_lines(proc.stdout)
    assert set(obj) == VERIFY_KEYS
    assert obj["ok"] is False and obj["did"] == DID
    assert obj["error"]["name"] == "InvalidCAR"
    assert "truncated" in obj["error"]["message"] and "at byte" in obj["error"]["message"]

    missing = tmp_path / "missing-node.car"
    blocks = list(fx.new.export_blocks())
    node = fx.new.data
    missing.write_bytes(write_car([fx.new.commit.cid], [b for b in blocks if b[0] != node]))
    proc = run("car", "verify", str(missing))
    assert proc.returncode == 1
    assert f"invalid: MissingBlock: missing block {node}" in proc.stderr

    proc = run("car", "verify", str(tmp_path / "does-not-exist.car"), "--json")
    assert proc.returncode == 1
    (obj,) = json_lines(proc.stdout)
    assert set(obj) == VERIFY_KEYS
    assert obj["error"]["name"] == "InputFileError"
    assert "No such file or directory" in obj["error"]["message"]


# --- ls / export -------------------------------------------------------------------------


def test_ls_lines_in_key_order(fx: Fixture) -> None:
    expected = [f"{path}\t{cid}" for path, cid in fx.new.walk()]
    for car in (fx.new_car, fx.shuffled_car):
        proc = run("car", "ls", str(car))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == expected
    assert sorted(expected) == expected
    proc = run("car", "ls", "-", stdin=fx.new_car.read_bytes())
    assert proc.stdout.splitlines() == expected


def test_ls_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.car"
    bad.write_bytes(b"\x05hello")
    proc = run("car", "ls", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: InvalidCAR:")
    proc = run("car", "ls", str(tmp_path / "nope.car"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: InputFileError: cannot open")
    assert "Traceback" not in proc.stderr


def expected_records(repo: Repo) -> list[dict[str, Any]]:
    out = []
    for path, cid in repo.walk():
        collection, rkey = path.split("/")
        found = repo.get_record(collection, rkey)
        assert found is not None
        out.append({"uri": f"at://{DID}/{path}", "cid": str(cid), "value": value_to_json(found[1])})
    return out


def test_export_jsonl(fx: Fixture) -> None:
    proc = run("car", "export", str(fx.new_car), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert all(set(row) == {"uri", "cid", "value"} for row in rows)
    assert rows == expected_records(fx.new)
    # the default output is the same
    assert run("car", "export", str(fx.shuffled_car)).stdout == proc.stdout


def test_export_out_dir(fx: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "records"
    proc = run("car", "export", str(fx.new_car), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert files == sorted(f"{path}.json" for path, _ in fx.new.walk())
    for row in expected_records(fx.new):
        path = row["uri"].removeprefix(f"at://{DID}/")
        assert json.loads((out / f"{path}.json").read_text()) == row["value"]


def test_export_binary_values_as_data_model_json(tmp_path: Path) -> None:
    key = PrivateKey.generate("k256")
    link = Repo.create(DID, key).repo.data
    value = {"$type": POST, "raw": b"\x00\x01\xfe", "ref": link}
    repo = Repo.build(DID, key, [(f"{POST}/one", value)])
    car = write_repo(tmp_path / "bin.car", repo)
    (row,) = json_lines(run("car", "export", str(car), "--jsonl").stdout)
    assert row["value"] == {"$type": POST, "raw": {"$bytes": "AAH+"}, "ref": {"$link": str(link)}}
    assert row["cid"] == str(cbor.encode_with_cid(value)[1])


# --- diff ----------------------------------------------------------------------------------


def test_diff_text_and_json(fx: Fixture) -> None:
    old = dict(fx.old.walk())
    new = dict(fx.new.walk())
    expected = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        action = "create" if a is None else "delete" if b is None else "update"
        expected.append(
            {"action": action, "path": path, "cid": str(b) if b else None, "prev": str(a) if a else None}
        )
    assert [op["action"] for op in expected].count("update") == 1
    assert len(expected) == 5

    proc = run("car", "diff", str(fx.old_car), str(fx.new_car), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout) == expected

    proc = run("car", "diff", str(fx.old_car), str(fx.shuffled_car))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{op['action']}\t{op['path']}\t{op['cid'] or op['prev']}" for op in expected
    ]
    # the other way round creates become deletes; same file: nothing
    back = json_lines(run("car", "diff", str(fx.new_car), str(fx.old_car), "--json").stdout)
    assert sorted(op["action"] for op in back) == ["create", "create", "delete", "delete", "update"]
    assert run("car", "diff", str(fx.new_car), str(fx.shuffled_car)).stdout == ""


def test_diff_from_stdin(fx: Fixture) -> None:
    proc = run("car", "diff", "-", str(fx.new_car), "--json", stdin=fx.old_car.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert len(json_lines(proc.stdout)) == 5


# --- info ------------------------------------------------------------------------------------


def test_info_text(fx: Fixture) -> None:
    proc = run("car", "info", str(fx.new_car))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"CAR version 1, roots: {fx.new.commit.cid}" in out
    for line in (f"did      {DID}", f"rev      {fx.new.rev}", f"data     {fx.new.data}", "version  3"):
        assert line in out
    nodes = len(list(fx.new.tree.node_cids()))
    assert f"records 80, MST nodes {nodes}, blocks {81 + nodes}, unreferenced 0, " in out
    assert f"tree height {fx.new.tree.layer + 1}" in out
    assert f"  {POST}: 60" in out and f"  {LIKE}: 19" in out


def test_info_json(fx: Fixture) -> None:
    for args, stdin in (([str(fx.shuffled_car)], None), (["-"], fx.new_car.read_bytes())):
        proc = run("car", "info", *args, "--json", stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        (obj,) = json_lines(proc.stdout)
        commit = fx.new.commit
        assert obj["version"] == 1
        assert obj["roots"] == [str(commit.cid)]
        assert obj["commit"] == {
            "cid": str(commit.cid),
            "did": DID,
            "version": 3,
            "data": str(commit.data),
            "rev": commit.rev,
            "prev": None,
            "sig": commit.sig.hex(),
        }
        nodes = len(list(fx.new.tree.node_cids()))
        assert (obj["records"], obj["nodes"], obj["blocks"], obj["unreferenced"]) == (
            80,
            nodes,
            81 + nodes,
            0,
        )
        assert obj["height"] == fx.new.tree.layer + 1
        assert obj["collections"] == {POST: 60, LIKE: 19, "app.bsky.graph.follow": 1}
        assert obj["ok"] is True and obj["error"] is None
    assert (
        json_lines(run("car", "info", str(fx.new_car), "--json").stdout)[0]["size"]
        == fx.new_car.stat().st_size
    )


def test_info_of_a_broken_file(fx: Fixture, tmp_path: Path) -> None:
    data = fx.new_car.read_bytes()
    cut = tmp_path / "cut.car"
    cut.write_bytes(data[:-10])
    proc = run("car", "info", str(cut), "--json")
    assert proc.returncode == 1
    (obj,) = json_lines(proc.stdout)
    assert obj["ok"] is False and obj["error"]["name"] == "InvalidCAR"
    assert obj["roots"] == [str(fx.new.commit.cid)]
