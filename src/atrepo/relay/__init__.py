"""The relay: subscribes to many hosts, verifies every event, keeps each account's state, serves one firehose.

See :mod:`atrepo.relay.app` for the process, :mod:`.ingest` for the per-event
policy, :mod:`.hosts` for upstream hosts and :mod:`.resync` for accounts that
fell out of step, :mod:`.follower` for fan-out processes and the sequencer
(``--role fanout|sequencer``; ingest processes, ``--role ingest``, are
:func:`start_relay` with a partition);
``docs/relay.md`` for operating it.
"""

from .app import RelayContext, RunningRelay, start_relay
from .config import DEFAULT_PORT, RelayConfig
from .follower import RunningFanout, start_fanout

__all__ = [
    "DEFAULT_PORT",
    "RelayConfig",
    "RelayContext",
    "RunningFanout",
    "RunningRelay",
    "start_fanout",
    "start_relay",
]
