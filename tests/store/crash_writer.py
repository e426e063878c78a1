"""The child process of ``test_store_crash.py``: writes to three repositories until it is killed.

Usage: ``python crash_writer.py DATA_DIR SEED``. Each repository gets its own
asyncio task; every write goes through the store worker, one transaction per
commit. One line per fact, flushed at once:

* ``C <did> <rkey> <seq>``: a create, printed after its transaction committed;
* ``W <did> <rkey>``: a delete is about to be submitted (it may commit unacknowledged);
* ``D <did> <rkey> <seq>``: that delete, printed after its transaction committed.

Records repeat a few texts, so identical records share blocks and deletes
exercise the reference count.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from store_support import commit, create, delete, new_account, post

from atrepo.core.keys import PrivateKey
from atrepo.core.tid import DEFAULT_CLOCK
from atrepo.store.base import Store
from atrepo.store.sqlite import SQLiteStore
from atrepo.store.worker import StoreWorker

DIDS = tuple(f"did:plc:crash{letter * 19}" for letter in "abc")
TEXTS = ("hello", "same again", "a third text", "four")


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def writer(worker: StoreWorker[Store], did: str, key: PrivateKey, rng: random.Random) -> None:
    mine: list[str] = []
    while True:
        if mine and rng.random() < 0.25:
            rkey = mine.pop(rng.randrange(len(mine)))
            emit(f"W {did} {rkey}")
            _, row = await worker.run(commit, did, key, [delete(rkey)])
            emit(f"D {did} {rkey} {row.seq}")
        else:
            rkey = DEFAULT_CLOCK.next()
            _, row = await worker.run(commit, did, key, [create(rkey, post(rng.choice(TEXTS)))])
            emit(f"C {did} {rkey} {row.seq}")
            mine.append(rkey)


async def main(data_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = SQLiteStore(data_dir)
    worker: StoreWorker[Store] = StoreWorker(store)
    keys: dict[str, PrivateKey] = {}
    for did in DIDS:
        account = await worker.read(lambda s, did=did: s.get_account(did))
        if account is None:
            _, keys[did] = await worker.run(new_account, did)
        else:
            keys[did] = PrivateKey.from_bytes("k256", account.signing_key)
    await asyncio.gather(*(writer(worker, did, keys[did], random.Random(rng.random())) for did in DIDS))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
