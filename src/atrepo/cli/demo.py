"""``atrepo demo``: build a sample repository and firehose, then verify both.

It shows the whole core working on one machine with no network: a signing key,
a repository of sample records written as a CAR file in the streamable order,
a stream of signed ``#commit`` events, and their full verification.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Annotated

import typer

from ..core.car import CarWriter
from ..core.events import decode_frame, encode_frame, iter_stream_frames, write_stream_frame
from ..core.keys import PrivateKey
from ..core.repo import Repo, Write
from ..core.syntax import format_datetime
from ..core.tid import now_tid
from ..core.validate import check_chain, state_after, validate_commit
from ..core.verify import RepoSummary, verify_repo_car


def _post(i: int, rng: random.Random) -> dict[str, object]:
    words = ["sync", "tree", "commit", "relay", "record", "signature", "firehose", "block"]
    return {
        "$type": "app.bsky.feed.post",
        "text": f"post {i}: " + " ".join(rng.choice(words) for _ in range(8)),
        "createdAt": "2026-11-25T00:00:00.000Z",
        "langs": ["en"],
    }


def demo(
    out: Annotated[Path, typer.Option(help="directory for the sample files")] = Path("sample"),
    records: Annotated[int, typer.Option(help="records in the sample repository")] = 10_000,
    commits: Annotated[int, typer.Option(help="#commit events in the sample stream")] = 200,
) -> None:
    """Build a sample repository and firehose, then verify both."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    key = PrivateKey.generate("k256")
    did = "did:plc:" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24))
    (out / "signing.key").write_text(key.to_multibase() + "\n")
    started = time.perf_counter()
    paths = sorted({f"app.bsky.feed.post/{now_tid()}" for _ in range(records)})
    repo = Repo.build(did, key, ((p, _post(i, rng)) for i, p in enumerate(paths)))
    car_path = out / "repo.car"
    with open(car_path, "wb") as fh:
        writer = CarWriter(fh, [repo.commit.cid])
        for cid, data in repo.export_blocks():
            writer.write_block(cid, data)
    built = time.perf_counter() - started
    size = car_path.stat().st_size
    print(f"built {did}: {len(paths)} records in {built:.2f} s -> {car_path} ({size:,} bytes)")

    started = time.perf_counter()
    summary = RepoSummary()
    with open(car_path, "rb") as fh:
        count = sum(1 for _ in verify_repo_car(fh, key=key.public_key, did=did, summary=summary))
    took = time.perf_counter() - started
    print(
        f"verified repo.car: {count} records, {summary.blocks} blocks, height {summary.height}, "
        f"signed by {key.public_key.did_key()} ({took:.2f} s, {count / took:,.0f} records/s)"
    )

    stream_path = out / "firehose.stream"
    with open(stream_path, "wb") as fh:
        for seq in range(1, commits + 1):
            write = Write("create", "app.bsky.feed.post", now_tid(), _post(records + seq, rng))
            result = repo.apply_writes([write], key)
            repo = result.repo
            event = result.to_event(seq, format_datetime_now())
            write_stream_frame(fh, encode_frame(event))
    started = time.perf_counter()
    state = None
    ok = 0
    with open(stream_path, "rb") as fh:
        for _offset, frame in iter_stream_frames(fh):
            verified = validate_commit(decode_frame(frame), key.public_key)  # type: ignore[arg-type]
            check_chain(state, verified)
            state = state_after(verified)
            ok += 1
    took = time.perf_counter() - started
    print(
        f"verified firehose.stream: {ok} #commit events (Sync 1.1: signature, proof, inversion) "
        f"({took:.2f} s, {ok / took:,.0f} events/s)"
    )
    print(
        f"try: atrepo car info {car_path}   |   atrepo firehose verify {stream_path} --key "
        f"{key.public_key.did_key()}"
    )


def format_datetime_now() -> str:
    from datetime import UTC, datetime

    return format_datetime(datetime.now(UTC))
