"""The optional C fast paths of the core, and the switch that turns them off.

``_mstnode`` (``_mstnode.c``) proves a canonical MST node valid and builds its
parts, several times faster than the pure-Python decoder, inverts a one-op
commit on the nodes of its CAR slice (the relay's hot path), reads the block
sections of a small CAR with every hash checked, and writes the CAR sections of a
stored repository's ``getRepo`` walk (``export_chunk``). It is optional: a
plain install without a compiler still works, and ``ATREPO_PURE=1`` in the
environment forces the pure-Python path (the tests run both and compare).
Either way the results are the same; the C code only ever answers "valid,
here are the parts" or "not proven here", and the pure-Python decoder decides
the rest, with its own error messages.

This is the one module that reads the switch, once, at import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from .cid import CID

__all__ = ["PURE", "car_blocks", "export_chunk", "mst_invert", "mst_node_parse"]

#: True when ``ATREPO_PURE`` asks for the pure-Python paths (any value but "", "0").
PURE = os.environ.get("ATREPO_PURE", "") not in ("", "0")

#: ``parse(data, max_key, max_entries, max_layer)``: ``(keys, vals, subs, heads, tails,
#: layer)`` or None; None itself when the extension is missing or switched off.
mst_node_parse: Callable[[bytes, int, int, int], tuple[Any, ...] | None] | None = None


#: ``invert(blocks, root, key, cur, new, max_bytes, max_key, max_entries, max_layer)``: the
#: root CID bytes of the tree at ``root`` (read from the ``{CID: bytes}`` dict ``blocks``)
#: after setting ``key`` from ``cur`` to ``new`` (None: absent), or None when not proven
#: here (``validate.check_tree_ops`` then runs the pure-Python path); None itself when
#: the extension is missing or switched off.
mst_invert: Callable[..., bytes | None] | None = None


#: ``car_blocks(data, pos, max_section)``: the hash-checked ``{CID: bytes}`` of a small
#: CAR's sections, or None; None itself unless the extension hashes on the CPU's SHA
#: extensions (its portable SHA-256 is slower than hashlib on block-sized data).
car_blocks: Callable[[bytes, int, int], dict[CID, bytes] | None] | None = None


#: ``export_chunk(stack, nodes, read, records, max_blocks, max_bytes)``: the next CAR
#: sections of a stored repository's pre-order export and whether the walk is over,
#: goes on, or is handed back (host/sync_api.py ``_stored_pre_order``, whose contract it
#: follows); None when the extension is missing or switched off.
export_chunk: Callable[..., tuple[bytes, int, int]] | None = None


def _load() -> None:
    global mst_node_parse, mst_invert, car_blocks, export_chunk
    if PURE:
        return
    try:
        module: Any = importlib.import_module("atrepo.core._mstnode")
    except ImportError:
        return
    module.setup(CID)
    mst_node_parse = module.parse
    mst_invert = module.invert
    export_chunk = module.export_chunk
    if module.SHA_EXTENSIONS:
        car_blocks = module.car_blocks


_load()
