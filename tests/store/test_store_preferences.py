"""Contract of per-account preferences (``PreferenceStore``), and the SQLite migration that added them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from store_support import new_account

from atrepo.store.base import Preference, Store, in_namespace
from atrepo.store.sqlite import _MIGRATIONS, DB_FILENAME, SCHEMA_VERSION, SQLiteStore

ADULT = "app.bsky.actor.defs#adultContentPref"
FEED = "app.bsky.actor.defs#feedViewPref"


def pref(name: str, **fields: object) -> Preference:
    return Preference(name, json.dumps({"$type": name, **fields}))


def test_namespace_is_by_segment() -> None:
    assert in_namespace(ADULT, "app.bsky")
    assert in_namespace("app.bsky", "app.bsky")
    assert not in_namespace("app.bskyx.actor.defs#x", "app.bsky")
    assert not in_namespace("com.example.pref", "app.bsky")


def test_empty_then_put_and_get_in_order(store: Store) -> None:
    did, _ = new_account(store)
    assert store.get_preferences(did, "app.bsky") == []
    prefs = [pref(FEED, feed="home"), pref(ADULT, enabled=True)]
    store.put_preferences(did, "app.bsky", prefs)
    assert store.get_preferences(did, "app.bsky") == prefs


def test_put_replaces_only_its_namespace(store: Store) -> None:
    did, _ = new_account(store)
    other = pref("com.example.prefs#thing", x=1)
    store.put_preferences(did, "com.example", [other])
    store.put_preferences(did, "app.bsky", [pref(ADULT, enabled=True)])
    store.put_preferences(did, "app.bsky", [pref(FEED, feed="home")])
    assert store.get_preferences(did, "app.bsky") == [pref(FEED, feed="home")]
    assert store.get_preferences(did, "com.example") == [other]
    store.put_preferences(did, "app.bsky", [])
    assert store.get_preferences(did, "app.bsky") == []
    assert store.get_preferences(did, "com.example") == [other]


def test_accounts_are_separate_and_refusals(store: Store) -> None:
    alice, _ = new_account(store)
    bob, _ = new_account(store)
    store.put_preferences(alice, "app.bsky", [pref(ADULT, enabled=True)])
    assert store.get_preferences(bob, "app.bsky") == []
    assert store.get_preferences("did:plc:nobodyhere", "app.bsky") == []
    with pytest.raises(ValueError, match=r"outside app\.bsky"):
        store.put_preferences(alice, "app.bsky", [pref("com.example.x")])
    with pytest.raises(RuntimeError, match="no account"):
        store.put_preferences("did:plc:nobodyhere", "app.bsky", [])
    # a refused put changed nothing
    assert store.get_preferences(alice, "app.bsky") == [pref(ADULT, enabled=True)]


def test_deleting_the_account_deletes_them(store: Store) -> None:
    did, _ = new_account(store)
    store.put_preferences(did, "app.bsky", [pref(ADULT, enabled=True)])
    with store.transaction(did) as tx:
        tx.delete_account()
    assert store.get_preferences(did, "app.bsky") == []


def test_preferences_survive_reopening(make_store: Callable[[], Store]) -> None:
    store = make_store()
    did, _ = new_account(store)
    store.put_preferences(did, "app.bsky", [pref(ADULT, enabled=False)])
    store.close()
    assert make_store().get_preferences(did, "app.bsky") == [pref(ADULT, enabled=False)]


def test_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A store written before preferences existed opens, keeps its data, and gains the table."""
    assert SCHEMA_VERSION >= 2  # later migrations run too
    tmp_path.mkdir(exist_ok=True)
    db = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    db.executescript(f"BEGIN;\n{_MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    db.close()
    store = SQLiteStore(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        did, _ = new_account(store)
        store.put_preferences(did, "app.bsky", [pref(ADULT, enabled=True)])
        assert store.get_preferences(did, "app.bsky") == [pref(ADULT, enabled=True)]
        assert store.integrity_check() == ["ok"]
    finally:
        store.close()
