"""The relay's verifier gives the same verdicts inline and in worker processes (DIDs partitioned by hash)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from atrepo.core.commit import sign_commit
from atrepo.core.errors import InvalidCommitEvent
from atrepo.core.events import CommitEvent, encode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.relay.verifier import CommitCheck, Verifier

DIDS = [f"did:plc:{c * 24}" for c in "abcdef"]
KEY = PrivateKey.generate("k256")
OTHER = PrivateKey.generate("k256")
TIME = "2026-12-02T00:00:00.000Z"


def _events() -> list[CommitEvent]:
    events: list[CommitEvent] = []
    for did in DIDS:
        repo = Repo.build(
            did,
            KEY,
            [
                (f"app.bsky.feed.post/b{i:03d}", {"$type": "app.bsky.feed.post", "text": str(i)})
                for i in range(40)
            ],
        )
        for n in range(4):
            result = repo.apply_writes(
                [
                    Write(
                        "create",
                        "app.bsky.feed.post",
                        f"n{n}",
                        {"$type": "app.bsky.feed.post", "text": f"x{n}"},
                    )
                ],
                KEY,
            )
            events.append(result.to_event(len(events) + 1, TIME))
            repo = result.repo
    return events


def _forged(event: CommitEvent) -> CommitEvent:
    """The same event with its commit signed by another key (and the CAR rebuilt around it)."""
    from atrepo.core.car import read_car, write_car
    from atrepo.core.commit import decode_commit

    roots, blocks = read_car(event.blocks)
    raw = blocks.get(roots[0])
    assert raw is not None
    commit = decode_commit(raw, roots[0])
    forged = sign_commit(commit.did, commit.data, commit.rev, OTHER)
    others = [(c, d) for c, d in blocks.items() if c != roots[0]]
    car = write_car([forged.cid], [(forged.cid, forged.raw), *others])
    return dataclasses.replace(event, commit=forged.cid, blocks=car)


async def _run(verifier: Verifier, events: list[CommitEvent]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        try:
            out.append(await verifier.commit(event, encode_frame(event), KEY.public_key))
        except InvalidCommitEvent as exc:
            out.append((exc.rule, str(exc)))
    return out


@pytest.mark.timeout(120)
async def test_workers_agree_with_inline() -> None:
    events = _events()
    bad = [_forged(events[1]), dataclasses.replace(events[2], rev=events[0].rev)]
    every = [*events, *bad]
    inline = await _run(Verifier(0), every)
    pool = Verifier(2)
    try:
        spread = await _run(pool, every)
        assert {pool.partition_of(d) for d in DIDS} == {0, 1}  # the DIDs really spread
        assert pool.partition_of(DIDS[0]) == Verifier(2).partition_of(DIDS[0])  # stable
    finally:
        pool.close()
    assert spread == inline
    assert all(isinstance(r, CommitCheck) for r in inline[: len(events)])
    assert inline[-2][0] == "signature" and inline[-1][0] == "rev"


def test_lenient_check_keeps_signature_and_commit_rules() -> None:
    from atrepo.relay.verifier import check_commit, check_commit_signed

    events = _events()
    first, second = events[0], events[1]
    # ops that do not match the tree: the full check drops it, the lenient one only checks the commit
    wrong = dataclasses.replace(first, ops=(dataclasses.replace(first.ops[0], cid=second.ops[0].cid),))
    with pytest.raises(InvalidCommitEvent) as info:
        check_commit(wrong, KEY.public_key)
    assert info.value.rule in ("forward", "inversion")
    kept = check_commit_signed(wrong, KEY.public_key)
    assert (kept.rev, kept.commit) == (first.rev, first.commit)
    with pytest.raises(InvalidCommitEvent) as info:
        check_commit_signed(_forged(first), KEY.public_key)
    assert info.value.rule == "signature"
    with pytest.raises(InvalidCommitEvent) as info:
        check_commit_signed(dataclasses.replace(first, rev=second.rev), KEY.public_key)
    assert info.value.rule == "repo"
