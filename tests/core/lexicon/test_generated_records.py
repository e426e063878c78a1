"""Records our benchmark repositories generate pass the shipped lexicons.

The demo's records are checked end to end by ``tests/cli/test_cli_lexicon.py``
(``car verify --lexicons`` on the demo CAR).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from atrepo.core import cbor
from atrepo.lexicons import builtin_registry

ROOT = Path(__file__).resolve().parents[3]


def test_benchmark_repository_records_are_valid() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.repo_fixtures import _COLLECTIONS, _HISTORY_END, _HISTORY_START, _Maker, _micros
    finally:
        sys.path.remove(str(ROOT))
    registry = builtin_registry()
    rng = random.Random(7)
    maker = _Maker(rng)
    start, end = _micros(_HISTORY_START), _micros(_HISTORY_END)
    seen = set()
    for _ in range(2000):
        collection = maker.collection()
        record = maker.record(collection, rng.randrange(start, end))
        # as stored: through DAG-CBOR and back
        registry.validate_record(collection, cbor.decode(cbor.encode(record)))
        seen.add(collection)
    assert seen == {name for name, _ in _COLLECTIONS}
