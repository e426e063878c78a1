"""The server processes' collector setting (core.memory.tune_collector_for_server), in a child process:
it changes process-wide state that the test process must keep."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from atrepo.core.memory import SERVER_GC_THRESHOLD, tune_collector_for_server
before = gc.get_threshold()
tune_collector_for_server()
after = gc.get_threshold()
assert after == (SERVER_GC_THRESHOLD, before[1], before[2]), (before, after)
assert gc.get_freeze_count() > 0 and gc.isenabled()
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle: still collected
del a, b
assert gc.collect() >= 2
print("ok")
"""


def test_tune_collector_for_server_raises_the_threshold_and_still_collects_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
