"""Running a server command until SIGTERM or SIGINT.

Every server command (``serve``, ``relay``, ``sync``) waits the same way: the
signals set an event instead of raising, so the command's ``finally`` shuts
the service down in order; once the wait is over the handlers are removed, so
a second Ctrl-C during a slow shutdown interrupts it as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["stop_on_signals"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
