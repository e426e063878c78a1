"""The repository host (``atrepo serve``): accounts, sessions and, next, repositories and sync.

``config`` reads flags, environment and TOML; ``app`` starts and stops the
process and holds :class:`HostContext`, which every service module receives;
``auth`` issues and checks session tokens; ``accounts`` serves
``com.atproto.server.*``. Only the command line imports this package.
"""

from __future__ import annotations

from .app import HostContext, RunningHost, configure_logging, start_host
from .config import HostConfig, load_config

__all__ = ["HostConfig", "HostContext", "RunningHost", "configure_logging", "load_config", "start_host"]
