"""Untrimmed roots from the reference implementation: accepted and flagged, refused when strict, never made.

The fixtures in ``tests/fixtures/reference-quirk`` come from @atproto/repo (see
the README there): a batch that deleted the only record, a layer-2 key, and
created a layer-0 one left the new root two entry-less nodes above the real
one; the commit after it has an untrimmed ``prevData`` and ``data``.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from atrepo.core.blocks import BlockMap
from atrepo.core.car import read_car, write_car
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidCommitEvent, InvalidMST
from atrepo.core.events import CommitEvent, RepoOp, encode_frame, write_stream_frame
from atrepo.core.keys import PrivateKey, parse_did_key
from atrepo.core.mst import MST
from atrepo.core.repo import Repo, Write
from atrepo.core.validate import Chain, RepoState, check_chain, state_after, validate_commit
from atrepo.core.verify import RepoSummary, verify_repo_car

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "reference-quirk"
ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")
TIME = "2025-01-01T00:00:00.000Z"


def meta(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}-commit.json").read_text())
    return loaded


def event(name: str, seq: int = 1) -> CommitEvent:
    info = meta(name)
    ops = tuple(
        RepoOp(
            op["action"],
            op["path"],
            CID.parse(op["cid"]) if op["cid"] else None,
            CID.parse(op["prev"]) if op["prev"] else None,
        )
        for op in info["ops"]
    )
    return CommitEvent(
        seq=seq,
        repo=info["did"],
        commit=CID.parse(info["commit"]),
        rev=info["rev"],
        since=info["since"],
        blocks=(FIXTURES / f"{name}-commit.car").read_bytes(),
        ops=ops,
        time=TIME,
        prev_data=CID.parse(info["prevData"]),
    )


def key(name: str = "quirk") -> Any:
    return parse_did_key(meta(name)["key"])


def test_fixture_is_the_quirk() -> None:
    """The new root is entry-less, linking only an entry-less node over the real root."""
    _roots, blocks = read_car((FIXTURES / "quirk-repo.car").read_bytes())
    tree = MST.load(blocks, CID.parse(meta("quirk")["data"]))
    assert not tree.canonical and tree.layer == 2
    assert [k for k, _ in tree.walk()] == ["app.bsky.feed.post/rec1"]
    with pytest.raises(InvalidMST, match="must be trimmed"):
        MST.load(blocks, tree.root_cid, strict_shape=True)


def test_quirk_event_is_accepted_and_flagged() -> None:
    verified = validate_commit(event("quirk"), key())
    assert verified.inverted and not verified.canonical
    assert len(verified.warnings) == 1 and "untrimmed" in verified.warnings[0]
    before = RepoState(meta("quirk")["since"], CID.parse(meta("quirk")["prevData"]))
    assert check_chain(before, verified) is Chain.NEXT


def test_next_event_chains_from_an_untrimmed_prev_data() -> None:
    quirk = validate_commit(event("quirk"), key())
    following = validate_commit(event("next", 2), key("next"))
    assert following.inverted and not following.canonical
    # both the new root and prevData are untrimmed; the inverted tree is prevData's root two levels down
    assert len(following.warnings) == 2
    assert any("2 entry-less nodes" in w for w in following.warnings)
    assert check_chain(state_after(quirk), following) is Chain.NEXT


@pytest.mark.parametrize(("name", "rule"), [("quirk", "forward"), ("next", "forward")])
def test_strict_shape_rejects_the_events(name: str, rule: str) -> None:
    with pytest.raises(InvalidCommitEvent, match="must be trimmed") as info:
        validate_commit(event(name), key(name), strict_shape=True)
    assert info.value.rule == rule


def test_strict_shape_rejects_an_untrimmed_prev_data_alone() -> None:
    """Our own write on top of the quirky repository: a trimmed tree over an untrimmed prevData."""
    _roots, blocks = read_car((FIXTURES / "quirk-repo.car").read_bytes())
    repo = Repo.open(BlockMap(blocks.items()), CID.parse(meta("quirk")["commit"]))
    assert not repo.tree.canonical
    signer = PrivateKey.generate("k256")
    result = repo.apply_writes(
        [Write("create", "app.bsky.feed.post", "rec6", {"$type": "x", "n": 1})], signer
    )
    assert result.repo.tree.canonical  # we never write the quirk back
    verified = validate_commit(result.to_event(3, TIME), signer.public_key)
    assert not verified.canonical and verified.warnings[0].startswith(f"prevData {repo.data}")
    with pytest.raises(InvalidCommitEvent, match="untrimmed") as info:
        validate_commit(result.to_event(3, TIME), signer.public_key, strict_shape=True)
    assert info.value.rule == "inversion"


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("quirk", ["app.bsky.feed.post/rec1"]),
        ("next", ["app.bsky.feed.post/rec1", "app.bsky.feed.post/rec2"]),
    ],
)
def test_full_verification_accepts_and_flags(name: str, records: list[str]) -> None:
    data = (FIXTURES / f"{name}-repo.car").read_bytes()
    roots, blocks = read_car(data)
    shuffled = write_car(roots, list(blocks.items())[::-1])  # out of order: the indexed walk
    for car in (data, shuffled):
        summary = RepoSummary()
        items = list(verify_repo_car(io.BytesIO(car), key=key(name), summary=summary))
        assert [k for k, _ in items] == records
        assert not summary.canonical and summary.height == 3
        assert summary.streamed is (car is data)
        assert summary.unreferenced == 0 and summary.nodes == 3
        assert summary.blocks == 1 + 3 + len(records)
    with pytest.raises(InvalidMST, match="must be trimmed"):
        list(verify_repo_car(io.BytesIO(data), strict_shape=True))


def test_full_verification_of_the_repository_before() -> None:
    summary = RepoSummary()
    assert (
        len(list(verify_repo_car(io.BytesIO((FIXTURES / "before-repo.car").read_bytes()), summary=summary)))
        == 1
    )
    assert summary.canonical


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ATREPO, *args], capture_output=True, text=True, timeout=60, check=False)


def test_cli_car_verify_warns() -> None:
    path = str(FIXTURES / "quirk-repo.car")
    plain = run("car", "verify", path)
    assert plain.returncode == 0 and plain.stdout.startswith("ok:")
    assert "warning:" in plain.stderr and "untrimmed" in plain.stderr
    as_json = json.loads(run("car", "verify", "--json", path).stdout)
    assert as_json["ok"] and as_json["canonical"] is False and len(as_json["warnings"]) == 1
    strict = run("car", "verify", "--strict-shape", "--json", path)
    assert strict.returncode == 1 and json.loads(strict.stdout)["error"]["name"] == "InvalidMST"
    clean = json.loads(run("car", "verify", "--json", str(FIXTURES / "before-repo.car")).stdout)
    assert clean["canonical"] is True and clean["warnings"] == []


def test_cli_firehose_strict_shape(tmp_path: Path) -> None:
    stream = tmp_path / "frames.bin"
    with stream.open("wb") as out:
        for seq, name in enumerate(["quirk", "next"], 1):
            write_stream_frame(out, encode_frame(event(name, seq)))
    lenient = run("firehose", "verify", str(stream))
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    strict = run("firehose", "verify", "--strict-shape", str(stream))
    assert strict.returncode == 1 and "must be trimmed" in strict.stdout
