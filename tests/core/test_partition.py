"""``I/N`` parsing shared by ``relay --partition``, ``sync --partition`` and ``serve --worker``."""

from __future__ import annotations

import pytest

from atrepo.core.partition import parse_partition


@pytest.mark.parametrize(("text", "slot"), [("0/1", (0, 1)), ("3/4", (3, 4)), ("07/10", (7, 10))])
def test_accepted(text: str, slot: tuple[int, int]) -> None:
    assert parse_partition(text) == slot


@pytest.mark.parametrize("text", ["", "1", "2/2", "0/0", "-1/2", "+1/2", " 1/2", "1/2/3", "a/2", "1/b", "/2"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_partition(text)
