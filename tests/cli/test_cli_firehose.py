"""``atrepo firehose verify`` over recorded stream files, and ``atrepo demo``."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from atrepo.core.cid import CID
from atrepo.core.events import (
    AccountEvent,
    CommitEvent,
    IdentityEvent,
    SyncEvent,
    encode_frame,
    write_stream_frame,
)
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.varint import encode_varint

ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")
TIME = "2024-05-01T12:34:56.789Z"
ALICE = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
POST = "app.bsky.feed.post"
ROW_KEYS = {"seq", "type", "repo", "rev", "ok", "error"}
SUMMARY_KEYS = {"summary", "frames", "ok", "failed", "commits", "syncs", "repos", "signatures", "error"}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ATREPO, *args], input=stdin, capture_output=True, timeout=60, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def rows_and_summary(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    *rows, summary = lines
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert row["error"] is None or set(row["error"]) == {"name", "message"}
    assert set(summary) == SUMMARY_KEYS
    assert summary["summary"] is True
    return rows, summary


def history(did: str, key: PrivateKey, n: int) -> list[CommitResult]:
    """The first commit of a repository and ``n`` more, one or two writes each."""
    results = [Repo.create(did, key, [Write("create", POST, "first", {"$type": POST, "text": did})])]
    for i in range(n):
        writes = [Write("create", POST, f"p{i}", {"$type": POST, "i": i})]
        if i % 2:
            writes.append(Write("update", POST, "first", {"$type": POST, "text": f"edit {i}"}))
        results.append(results[-1].repo.apply_writes(writes, key))
    return results


def stream_file(path: Path, frames: list[Any]) -> Path:
    buf = io.BytesIO()
    for frame in frames:
        write_stream_frame(buf, frame if isinstance(frame, bytes) else encode_frame(frame))
    path.write_bytes(buf.getvalue())
    return path


def events(results: list[CommitResult], first_seq: int = 1) -> list[CommitEvent]:
    return [r.to_event(first_seq + i, TIME) for i, r in enumerate(results)]


@pytest.fixture(scope="module")
def alice() -> tuple[PrivateKey, list[CommitResult]]:
    key = PrivateKey.generate("k256")
    return key, history(ALICE, key, 6)


@pytest.fixture(scope="module")
def bob() -> tuple[PrivateKey, list[CommitResult]]:
    key = PrivateKey.generate("p256")
    return key, history(BOB, key, 4)


# --- valid streams ------------------------------------------------------------------------


def test_valid_stream_with_key(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    key, results = alice
    commits = events(results)
    frames: list[Any] = [
        IdentityEvent(1, ALICE, TIME, "alice.test"),
        AccountEvent(2, ALICE, TIME, True),
        *[dataclasses.replace(c, seq=c.seq + 2) for c in commits],
        results[-1].to_sync_event(20, TIME),  # restates the current state
        dataclasses.replace(commits[3], seq=21),  # a replay: ignored as a duplicate
    ]
    path = stream_file(tmp_path / "alice.stream", frames)
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, summary = rows_and_summary(proc.stdout)
    assert [r["type"] for r in rows] == ["#identity", "#account", *["#commit"] * 7, "#sync", "#commit"]
    assert [r["seq"] for r in rows] == [1, 2, *range(3, 10), 20, 21]
    assert all(r["ok"] and r["error"] is None for r in rows)
    assert [r["rev"] for r in rows[2:9]] == [c.rev for c in commits]
    assert all(r["repo"] == ALICE for r in rows)
    assert rows[0]["rev"] is None
    assert summary == {
        "summary": True,
        "frames": 11,
        "ok": 11,
        "failed": 0,
        "commits": 8,
        "syncs": 1,
        "repos": 1,
        "signatures": "checked",
        "error": None,
    }
    # text mode: just the summary
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key())
    assert proc.returncode == 0
    assert proc.stdout.strip() == (
        "11 frames: 11 ok, 0 failed (8 commits, 1 syncs, 1 repos; signatures checked)"
    )


def test_without_key_and_from_stdin(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    _, results = alice
    data = stream_file(tmp_path / "s.stream", events(results)).read_bytes()
    proc = run("firehose", "verify", "-", "--json", stdin=data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, summary = rows_and_summary(proc.stdout)
    assert len(rows) == 7 and all(r["ok"] for r in rows)
    assert summary["signatures"] == "skipped"


def test_wrong_key(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    _, results = alice
    path = stream_file(tmp_path / "s.stream", events(results[:3]))
    other = PrivateKey.generate("k256").public_key.did_key()
    proc = run("firehose", "verify", str(path), "--key", other, "--json")
    assert proc.returncode == 1
    rows, summary = rows_and_summary(proc.stdout)
    assert [r["ok"] for r in rows] == [False] * 3
    assert {r["error"]["name"] for r in rows} == {"InvalidCommitEvent"}
    assert all(r["error"]["message"].startswith("signature: ") for r in rows)
    assert (summary["ok"], summary["failed"]) == (0, 3)


def interleave(a: list[CommitEvent], b: list[CommitEvent]) -> list[CommitEvent]:
    out: list[CommitEvent] = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return [dataclasses.replace(e, seq=n + 1) for n, e in enumerate(out)]


def test_keys_file_two_repos(
    alice: tuple[PrivateKey, list[CommitResult]], bob: tuple[PrivateKey, list[CommitResult]], tmp_path: Path
) -> None:
    (akey, ares), (bkey, bres) = alice, bob
    path = stream_file(tmp_path / "mixed.stream", interleave(events(ares), events(bres)))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({ALICE: akey.public_key.did_key(), BOB: bkey.public_key.did_key()}))
    proc = run("firehose", "verify", str(path), "--keys", str(keys), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, summary = rows_and_summary(proc.stdout)
    assert len(rows) == len(ares) + len(bres)
    assert all(r["ok"] for r in rows)
    assert {r["repo"] for r in rows} == {ALICE, BOB}
    assert summary["repos"] == 2 and summary["signatures"] == "checked"

    # one key for everybody: Bob's frames fail their signature check
    proc = run("firehose", "verify", str(path), "--key", akey.public_key.did_key(), "--json")
    assert proc.returncode == 1
    rows, _ = rows_and_summary(proc.stdout)
    assert all(r["ok"] == (r["repo"] == ALICE) for r in rows)
    assert all(r["error"]["message"].startswith("signature: ") for r in rows if r["repo"] == BOB)

    # a DID missing from the map fails too
    keys.write_text(json.dumps({ALICE: akey.public_key.did_key()}))
    proc = run("firehose", "verify", str(path), "--keys", str(keys), "--json")
    assert proc.returncode == 1
    rows, _ = rows_and_summary(proc.stdout)
    assert {r["error"]["message"] for r in rows if r["repo"] == BOB} == {
        f"signature: no key for {BOB} in --keys"
    }


def test_unreadable_keys_file(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    path = stream_file(tmp_path / "s.stream", events(alice[1][:1]))
    proc = run("firehose", "verify", str(path), "--keys", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert "--keys" in proc.stderr and "Traceback" not in proc.stderr


# --- failures ----------------------------------------------------------------------------------


def test_tampered_frame_in_the_middle(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    key, results = alice
    commits = events(results)
    bad = commits[3]
    op = bad.ops[0]
    other = CID.for_dag_cbor(b"\xa1aa\x01")
    commits[3] = dataclasses.replace(bad, ops=(dataclasses.replace(op, cid=other), *bad.ops[1:]))
    path = stream_file(tmp_path / "tampered.stream", commits)
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 1
    rows, summary = rows_and_summary(proc.stdout)
    assert [r["ok"] for r in rows] == [True, True, True, False, True, True, True]
    error = rows[3]["error"]
    assert error["name"] == "InvalidCommitEvent"
    assert error["message"].startswith("forward: ")
    assert str(other) in error["message"]
    assert (summary["ok"], summary["failed"]) == (6, 1)
    # text mode names the frame
    proc = run("firehose", "verify", str(path))
    assert proc.returncode == 1
    assert f"seq 4 #commit {ALICE}: InvalidCommitEvent: forward: " in proc.stdout
    assert "7 frames: 6 ok, 1 failed" in proc.stdout


def test_chain_break(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    key, results = alice
    commits = events(results)
    del commits[2]  # a skipped commit
    path = stream_file(tmp_path / "gap.stream", commits)
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 1
    rows, _ = rows_and_summary(proc.stdout)
    assert [r["ok"] for r in rows] == [True, True, False, True, True, True]
    assert rows[2]["error"]["name"] == "OutOfSync"
    assert rows[2]["seq"] == 4
    assert "does not follow" in rows[2]["error"]["message"]


def test_sync_declares_new_state(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    """After a gap, a #sync of the current state lets the following commits chain again."""
    key, results = alice
    commits = events(results)
    frames: list[Any] = [commits[0], results[3].to_sync_event(50, TIME), *commits[4:]]
    path = stream_file(tmp_path / "sync.stream", frames)
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 0, proc.stdout
    rows, summary = rows_and_summary(proc.stdout)
    assert all(r["ok"] for r in rows)
    assert summary["syncs"] == 1


def test_bad_sync_frame(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    key, results = alice
    sync = results[1].to_sync_event(9, TIME)
    frames: list[Any] = [results[0].to_event(1, TIME), SyncEvent(9, ALICE, sync.blocks, results[0].rev, TIME)]
    path = stream_file(tmp_path / "badsync.stream", frames)
    proc = run("firehose", "verify", str(path), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 1
    rows, _ = rows_and_summary(proc.stdout)
    assert rows[1]["type"] == "#sync" and not rows[1]["ok"]
    assert rows[1]["error"]["message"].startswith("rev: ")


def test_truncated_stream(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    key, results = alice
    data = stream_file(tmp_path / "full.stream", events(results[:4])).read_bytes()
    cut = tmp_path / "cut.stream"
    cut.write_bytes(data[:-25])
    proc = run("firehose", "verify", str(cut), "--key", key.public_key.did_key(), "--json")
    assert proc.returncode == 1
    rows, summary = rows_and_summary(proc.stdout)
    assert len(rows) == 3 and all(r["ok"] for r in rows)
    assert summary["error"]["name"] == "InvalidEvent"
    assert "truncated frame at byte" in summary["error"]["message"]
    proc = run("firehose", "verify", str(cut))
    assert proc.returncode == 1
    assert "stream error: InvalidEvent: truncated frame at byte" in proc.stderr


def test_undecodable_frame(alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path) -> None:
    _, results = alice
    commits = events(results[:2])
    path = tmp_path / "junk.stream"
    path.write_bytes(
        encode_varint(len(encode_frame(commits[0])))
        + encode_frame(commits[0])
        + encode_varint(3)
        + b"\xff\xff\xff"
        + encode_varint(len(encode_frame(commits[1])))
        + encode_frame(commits[1])
    )
    proc = run("firehose", "verify", str(path), "--json")
    assert proc.returncode == 1
    rows, _ = rows_and_summary(proc.stdout)
    assert [r["ok"] for r in rows] == [True, False, True]
    assert rows[1]["type"] is None


def test_missing_stream_file(tmp_path: Path) -> None:
    proc = run("firehose", "verify", str(tmp_path / "nope.stream"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: InputFileError: cannot open")


# --- demo --------------------------------------------------------------------------------------------


def test_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run("demo", "--out", str(out), "--records", "300", "--commits", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "300 records" in proc.stdout and "5 #commit events" in proc.stdout
    key = PrivateKey.from_multibase((out / "signing.key").read_text().strip())
    did_key = key.public_key.did_key()
    proc = run("car", "verify", str(out / "repo.car"), "--key", did_key, "--json")
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["records"] == 300
    proc = run("firehose", "verify", str(out / "firehose.stream"), "--key", did_key, "--json")
    assert proc.returncode == 0, proc.stdout
    rows, summary = rows_and_summary(proc.stdout)
    assert len(rows) == 5 and summary["commits"] == 5


@pytest.mark.parametrize("content", [b"[" * 100_000, b"{not json", b"\xff\xfe", b'{"a": NaN}'])
def test_malformed_keys_file_is_a_typed_error(
    alice: tuple[PrivateKey, list[CommitResult]], tmp_path: Path, content: bytes
) -> None:
    path = stream_file(tmp_path / "s.stream", events(alice[1][:1]))
    keys = tmp_path / "keys.json"
    keys.write_bytes(content)
    proc = run("firehose", "verify", str(path), "--keys", str(keys))
    assert proc.returncode == 1
    assert "InputFileError" in proc.stderr and "--keys" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 2_000
