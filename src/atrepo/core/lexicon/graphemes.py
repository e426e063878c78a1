"""Counting extended grapheme clusters (Unicode UAX #29), for ``min/maxGraphemes``.

We use the ``regex`` module's ``\\X``: it implements the extended clusters of
UAX #29 with its own Unicode tables, which it updates to each new Unicode
release (monthly releases for over a decade), independent of the Python build's
``unicodedata``. The pure-Python ``grapheme`` package stopped at Unicode 13 in
2020, and counting code points or UTF-16 units is simply wrong for emoji
sequences and combining marks. Counts can shift between Unicode versions, so
the library is pinned with the rest of our dependencies.
"""

from __future__ import annotations

import regex

__all__ = ["count_graphemes", "graphemes_at_most"]

_CLUSTER = regex.compile(r"\X")


def count_graphemes(text: str) -> int:
    """The number of extended grapheme clusters in ``text``."""
    if text.isascii():
        # In ASCII only CR LF joins two code points into one cluster.
        return len(text) - text.count("\r\n")
    return len(_CLUSTER.findall(text))


def graphemes_at_most(text: str, limit: int) -> int | None:
    """``None`` when ``text`` has at most ``limit`` clusters, else its count.

    A string never has more clusters than code points, so a short string needs
    no segmentation at all: the common case for posts well under the limit.
    """
    if len(text) <= limit:
        return None
    count = count_graphemes(text)
    return None if count <= limit else count
