"""Lexicons: the schema language of AT Protocol records and XRPC calls.

Pure core: documents arrive as parsed JSON (``atrepo.lexicons`` reads the
shipped set and extra directories), are checked and kept in a
:class:`Registry`, and are compiled once into validators for records
(:mod:`.records`) and XRPC parameters, bodies and messages (:mod:`.xrpc`).
"""

from __future__ import annotations

from .document import parse_document
from .registry import Registry
from .schema import LexiconDoc

__all__ = ["LexiconDoc", "Registry", "parse_document"]
