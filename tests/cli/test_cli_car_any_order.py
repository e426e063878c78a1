"""``atrepo car verify`` on CARs whose blocks are not in pre-order: each failure, as a user sees it.

Files in the reference host's order or shuffled are indexed before the walk
(in C when the extension is built). Through the real console script, each
failure must still name what is wrong and where, and the counts must be exact.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from atrepo.core import cbor
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo
from atrepo.core.varint import encode_varint

ATREPO = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "atrepo")
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
KEY = PrivateKey.generate("k256")
REPO = Repo.build(
    DID, KEY, [(f"app.bsky.feed.post/r{i:04d}", {"$type": "app.bsky.feed.post", "n": i}) for i in range(150)]
)
BLOCKS = list(REPO.export_blocks())
RECORDS = list(REPO.walk())
ORDERS = {
    "reversed": [BLOCKS[0], *BLOCKS[:0:-1]],
    "shuffled": [BLOCKS[0], *random.Random(2).sample(BLOCKS[1:], len(BLOCKS) - 1)],
}


def verify(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [ATREPO, "car", "verify", str(path), "--json", "--key", KEY.public_key.did_key(), *extra],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("order", ORDERS)
def test_any_order_failures_are_named_and_located(order: str, tmp_path: Path) -> None:
    blocks = ORDERS[order]
    # hash mismatch: the block's CID and the offset of its section
    victim_cid, victim = next(b for b in blocks if b[0] == RECORDS[70][1])
    garbled = [(c, d[:-1] + b"\x00" if c == victim_cid else d) for c, d in blocks]
    data = write_car([REPO.commit.cid], garbled)
    path = tmp_path / "garbled.car"
    path.write_bytes(data)
    code, obj = verify(path)
    at = data.index(encode_varint(len(victim_cid.raw) + len(victim)) + victim_cid.raw)
    assert code == 1 and obj["error"]["name"] == "InvalidCAR"
    assert obj["error"]["message"] == f"block data does not match its CID {victim_cid} at byte {at}"
    # a missing record: its CID and its path
    path = tmp_path / "missing.car"
    path.write_bytes(write_car([REPO.commit.cid], [b for b in blocks if b[0] != victim_cid]))
    code, obj = verify(path)
    assert code == 1 and obj["error"]["name"] == "MissingBlock"
    assert obj["error"]["message"] == f"missing block {victim_cid} (record {RECORDS[70][0]})"
    # duplicates count once, unreferenced blocks are counted
    junk = [(CID.for_dag_cbor(raw), raw) for raw in (cbor.encode({"junk": i}) for i in range(3))]
    path = tmp_path / "extra.car"
    path.write_bytes(write_car([REPO.commit.cid], blocks[:5] + junk + blocks[5:] + blocks[10:20]))
    code, obj = verify(path)
    assert code == 0 and obj["ok"] and obj["records"] == len(RECORDS)
    assert obj["blocks"] == len(BLOCKS) + len(junk)
    proc = subprocess.run([ATREPO, "car", "verify", str(path)], capture_output=True, timeout=60, check=False)
    assert b"note: 3 unreferenced blocks ignored" in proc.stdout
    # a truncated file: where it ends
    path = tmp_path / "truncated.car"
    whole = write_car([REPO.commit.cid], blocks)
    path.write_bytes(whole[: len(whole) // 2])
    code, obj = verify(path)
    assert code == 1 and obj["error"]["name"] == "InvalidCAR" and "truncated" in obj["error"]["message"]
