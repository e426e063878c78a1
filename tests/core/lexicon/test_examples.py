"""Every record type of the shipped app.bsky / chat.bsky / com.atproto set has valid examples that pass.

The examples (tests/fixtures/lexicon/examples/, see its README) were written by hand from the
schemas; each file names its collection, a record key of the lexicon's key type and several records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atrepo.core import datamodel
from atrepo.core.lexicon.records import check_record_key, prepare_record
from atrepo.lexicons import builtin_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "lexicon" / "examples"
FILES = sorted(EXAMPLES.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_every_record_type_has_examples() -> None:
    registry = builtin_registry()
    wanted = {
        nsid
        for nsid in registry
        if nsid.startswith(("app.bsky.", "chat.bsky.", "com.atproto."))
        and registry.record_def(nsid) is not None
    }
    have = {_load(p)["nsid"] for p in FILES}
    assert wanted <= have, sorted(wanted - have)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_examples_pass(path: Path) -> None:
    registry = builtin_registry()
    data = _load(path)
    nsid, rkey = data["nsid"], data["rkey"]
    schema = registry.record_def(nsid)
    assert schema is not None
    check_record_key(nsid, schema.key, rkey)
    assert len(data["examples"]) >= 2
    for example in data["examples"]:
        value = datamodel.json_to_value(example["record"])
        registry.validate_record(nsid, value)
        assert registry.validate_json_record(nsid, example["record"]) == value  # the one-pass path
        # the write path agrees, and stores the record unchanged
        stored, status = prepare_record(registry, nsid, rkey, value, validate=True)
        assert status == "valid"
        assert stored == value
