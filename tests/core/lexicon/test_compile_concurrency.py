"""Validators compiled from several threads at once, recursive defs included, all work."""

from __future__ import annotations

import threading
from typing import Any

from atrepo.core.lexicon import Registry
from atrepo.lexicons import builtin_documents

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"


def _thread(depth: int) -> dict[str, Any]:
    """A thread view nested ``depth`` deep (threadViewPost refers to itself through its union)."""
    post = {
        "uri": f"at://{DID}/app.bsky.feed.post/3kz7lqvwc6d2a",
        "cid": CID,
        "author": {"did": DID, "handle": "alice.example.com"},
        "record": {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-11-30T12:00:00Z"},
        "indexedAt": "2026-11-30T12:00:00Z",
    }
    node: dict[str, Any] = {"$type": "app.bsky.feed.defs#threadViewPost", "post": post}
    for _ in range(depth):
        node = {"$type": "app.bsky.feed.defs#threadViewPost", "post": post, "parent": node}
    return node


def _race(registry: Registry) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait()
            for depth in range(6):
                registry.validate("app.bsky.feed.defs#threadViewPost", _thread(depth))
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_concurrent_first_compiles() -> None:
    for _ in range(3):  # a fresh registry each time, so every thread races the first compile
        assert _race(Registry(builtin_documents())) == []
