"""Real hosts and a real relay on 127.0.0.1 free ports, stopped after each test (``relay_env``).

``relay_env`` is one host (running the embedded PLC directory) and a relay
with that host as its ``--upstream`` and a known admin password;
``relay_env_factory`` builds others (more hosts, other relay settings).
Helpers are in ``relay_testenv.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from relay_testenv import ADMIN_PASSWORD, RelayEnv, RelayEnvFactory, UpstreamHost

from atrepo.host import HostConfig, start_host
from atrepo.relay import RelayConfig, start_relay

#: Every relay test gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def relay_env_factory(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[RelayEnvFactory]:
    """``await make(hosts=1, before=None, **relay_config)``: hosts, then a relay subscribed to them all.

    ``before(hosts)`` runs after the hosts start and before the relay does
    (to create accounts the relay then seeds from ``listRepos``). Everything
    started is stopped at the end of the test, relay first.
    """
    envs: list[RelayEnv] = []
    started_hosts: list[UpstreamHost] = []

    async def make(
        hosts: int = 1,
        before: Callable[[list[UpstreamHost]], Awaitable[None]] | None = None,
        **relay_config: Any,
    ) -> RelayEnv:
        base = tmp_path / f"env-{len(envs)}"
        upstreams: list[UpstreamHost] = []
        for index in range(hosts):
            config = HostConfig(
                host="127.0.0.1",
                port=0,
                plc_port=0,
                plc_url=upstreams[0].plc_url if upstreams else None,
                data_dir=base / f"host-{index}",
                rate_limits=False,
            )
            host = UpstreamHost(await start_host(config), http)
            upstreams.append(host)
            started_hosts.append(host)
        if before is not None:
            await before(upstreams)
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": base / "relay",
            "plc_url": upstreams[0].plc_url,
            "upstreams": tuple(h.url for h in upstreams),
            "admin_password": ADMIN_PASSWORD,
        }
        settings.update(relay_config)
        config = RelayConfig(**settings)
        relay = await start_relay(config)
        env = RelayEnv(base, http, upstreams, relay, config, config.admin_password)
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            await env.relay.stop()
            for host in env.hosts:
                if host not in started_hosts:
                    started_hosts.append(host)
        for host in reversed(started_hosts):
            await host.running.stop()


@pytest.fixture
async def relay_env(relay_env_factory: RelayEnvFactory) -> RelayEnv:
    """One host (with the embedded PLC directory) and a relay with it as ``--upstream``."""
    return await relay_env_factory()
