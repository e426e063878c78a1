"""Every #commit the firehose serves passes Sync 1.1 validation, chained from each repository's genesis."""

from __future__ import annotations

from firehose_support import POST, Start, create, post, read_until, receive_frame

from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent
from atrepo.core.repo import Write
from atrepo.core.tracker import RepoTracker, Verdict


async def test_commits_validate_chained_from_genesis(start: Start) -> None:
    fh = await start(window=8, page=5, max_queue=8)
    alice = await fh.create_account([create("hello")])
    bob = await fh.create_account()
    async with await fh.connect(0) as ws:
        head = 8
        for i in range(12):
            who = alice if i % 2 else bob
            writes = [create(f"r{i}")]
            if i >= 2:  # update the record made two steps ago, delete the one before
                writes.append(Write("update", POST, f"r{i - 2}", post(f"edited {i}")))
            if i >= 4 and i % 4 == 0:
                writes.append(Write("delete", POST, f"r{i - 4}"))
            head = (await fh.commit(who, writes)).seq
        head = (await fh.commit(alice, [])).seq  # an empty commit: new rev, no ops
        frames = await read_until(ws, head)
        # And one more, live, after the cutover.
        head = (await fh.post(bob)).seq
        _, last = await receive_frame(ws)
        frames.append((b"", last))
    keys = {alice.did: alice.key.public_key, bob.did: bob.key.public_key}
    tracker = RepoTracker()
    verdicts: dict[str, list[Verdict]] = {alice.did: [], bob.did: []}
    assert [getattr(f, "seq", None) for _, f in frames] == list(range(1, head + 1))
    for _, frame in frames:
        if isinstance(frame, CommitEvent):
            outcome = tracker.process(frame, keys[frame.repo])
            assert outcome.ok, outcome.error
            verdicts[frame.repo].append(outcome.verdict)
        elif isinstance(frame, SyncEvent):
            outcome = tracker.process(frame, keys[frame.did])
            assert outcome.ok and outcome.verdict is Verdict.DUPLICATE  # restates the genesis commit
        else:
            assert isinstance(frame, IdentityEvent | AccountEvent)
    assert verdicts[alice.did] == [Verdict.FIRST] + [Verdict.NEXT] * 7
    assert verdicts[bob.did] == [Verdict.FIRST] + [Verdict.NEXT] * 7
