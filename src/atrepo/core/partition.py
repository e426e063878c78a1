"""``I/N``: one worker's share of a job split N ways (``--partition``, ``--worker``).

The relay's ingest processes, the sync consumer's workers and the host's
worker processes all name their share this way; one parser keeps the three
command lines agreeing on what they accept.
"""

from __future__ import annotations

__all__ = ["parse_partition"]


def parse_partition(text: str) -> tuple[int, int]:
    """``I/N`` as ``(I, N)``, both plain decimal with ``0 <= I < N``; ``ValueError`` otherwise."""
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise ValueError(f"I/N with 0 <= I < N, not {text!r}")
    return int(index), int(count)
