"""The one vocabulary of record operations: ``create``, ``update``, ``delete``.

A write asked of a repository, an op of a ``#commit`` event and a change found
by a tree diff are the same three things; they share this type so that a
value from one can be handed to another without translation.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["ACTIONS", "CREATE", "DELETE", "UPDATE", "Action", "action_of"]

Action = Literal["create", "update", "delete"]

CREATE: Final = "create"
UPDATE: Final = "update"
DELETE: Final = "delete"

#: Every valid action, for checking values that come from outside.
ACTIONS: Final[frozenset[str]] = frozenset({CREATE, UPDATE, DELETE})


def action_of(old: object | None, new: object | None) -> Action:
    """The action that turns ``old`` into ``new`` (None meaning absent)."""
    if old is None:
        return "create"
    if new is None:
        return "delete"
    return "update"
