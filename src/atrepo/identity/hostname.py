"""Which hostnames identity lookups may touch (handles and did:web).

Syntax-valid names under reserved TLDs never resolve on the public internet;
refusing them before any DNS or HTTP traffic keeps a hostile handle from
pointing our resolvers at internal names.
"""

from __future__ import annotations

from typing import Final

#: TLDs that are syntactically fine but never resolved (identity spec §7).
DISALLOWED_TLDS: Final = frozenset(
    {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
)
#: TLDs resolved only when a resolver runs in development mode.
DEV_ONLY_TLDS: Final = frozenset({"test"})


def tld_problem(hostname: str, *, dev: bool = False) -> str | None:
    """Why ``hostname`` must not be resolved, or None when it may be."""
    tld = hostname.rsplit(".", 1)[-1].lower()
    if tld in DISALLOWED_TLDS:
        return f"TLD .{tld} is reserved and never resolved"
    if tld in DEV_ONLY_TLDS and not dev:
        return f"TLD .{tld} is only resolved in development mode"
    return None
