"""Helpers of the relay's end-to-end tests: hosts behind fault proxies, accounts, a verifying subscriber.

:class:`Net` is the little network the tests build on 127.0.0.1: atrepo hosts
(the first runs the PLC directory), each behind an :class:`UpstreamProxy`
that is the host's ``public_url``, so the relay, which learns where an
account lives from its DID document, takes the proxy for the host and every
fault the proxy injects is the host's fault in the relay's eyes.

:class:`Watcher` subscribes to the relay with the same client the relay
uses upstream and passes every frame through :class:`FrameVerifier` (Sync
1.1 checks, keys from the PLC directory), so a test can ask what the relay's
*verified* stream carried: record creates per DID, ``#sync`` restatements,
seqs (contiguous, no duplicates).

Waits poll live state with a deadline (:func:`until`): never a sleep as an
assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from upstream_proxy import UpstreamProxy, bind_local

from atrepo.core.events import AccountEvent, CommitEvent, SyncEvent
from atrepo.core.tracker import Verdict
from atrepo.firehose.subscriber import FrameVerifier, Received, Subscriber
from atrepo.host import HostConfig, RunningHost, start_host
from atrepo.identity.resolver import DIDResolver

__all__ = [
    "PASSWORD",
    "Account",
    "Net",
    "Node",
    "Watcher",
    "Write",
    "free_port",
    "metric",
    "spawn_relay",
    "until",
]

PASSWORD = "correct horse"
NOW = "2026-12-02T00:00:00.000Z"


async def until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str, timeout: float = 20.0
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    target = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(target + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class Node:
    """One host, its data directory, its port (kept across restarts), and the proxy in front of it."""

    name: str
    data_dir: Path
    proxy: UpstreamProxy
    plc_url: str | None
    running: RunningHost | None = None
    port: int = 0

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    @property
    def key(self) -> str:
        """How the relay names the host: the proxy's ``host:port``."""
        return f"127.0.0.1:{self.proxy.port}"

    def config(self) -> HostConfig:
        extra: dict[str, Any] = {"plc_port": 0} if self.plc_url is None else {"plc_url": self.plc_url}
        return HostConfig(
            host="127.0.0.1",
            port=self.port,
            data_dir=self.data_dir,
            public_url=self.proxy.url,
            rate_limits=False,
            **extra,
        )

    async def start(self) -> None:
        self.running = await start_host(self.config())
        self.port = int(self.running.url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None

    async def restart(self) -> None:
        """Stop, then start on the same data directory and port (the proxy stays up)."""
        await self.stop()
        await self.start()


@dataclass
class Write:
    """One record the test created: where, its CID, and the rev of the commit that created it."""

    did: str
    path: str
    cid: str
    rev: str


@dataclass
class Account:
    handle: str
    did: str
    token: str
    node: Node


class Net:
    """Hosts behind proxies sharing one PLC directory, and raw XRPC calls to anything."""

    def __init__(self, root: Path, http: aiohttp.ClientSession) -> None:
        self.root = root
        self.http = http
        self.nodes: list[Node] = []
        self.accounts: dict[str, Account] = {}
        self.writes: list[Write] = []

    @property
    def plc_url(self) -> str:
        running = self.nodes[0].running
        assert running is not None
        return running.plc_url

    async def add_node(self, name: str) -> Node:
        proxy = UpstreamProxy(bind_local())
        node = Node(name, self.root / name, proxy, self.plc_url if self.nodes else None)
        await node.start()
        await proxy.start(node.url)
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        for node in reversed(self.nodes):
            await node.proxy.stop()
            await node.stop()

    async def call(
        self,
        url: str,
        nsid: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verb = "POST" if body is not None else "GET"
        async with self.http.request(
            verb, f"{url}/xrpc/{nsid}", json=body, params=params, headers=headers
        ) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data

    async def create_account(self, node: Node, handle: str) -> Account:
        status, out = await self.call(
            node.url, "com.atproto.server.createAccount", body={"handle": handle, "password": PASSWORD}
        )
        assert status == 200, out
        account = Account(handle, out["did"], out["accessJwt"], node)
        self.accounts[account.did] = account
        return account

    async def login(self, account: Account) -> None:
        status, out = await self.call(
            account.node.url,
            "com.atproto.server.createSession",
            body={"identifier": account.did, "password": PASSWORD},
        )
        assert status == 200, out
        account.token = out["accessJwt"]

    async def write(
        self, account: Account, count: int = 1, collection: str = "app.bsky.feed.post", text: str = "post"
    ) -> list[Write]:
        """``count`` createRecord calls at the account's host; each write is remembered."""
        out: list[Write] = []
        for i in range(count):
            record: dict[str, Any] = {"$type": collection, "text": f"{text} {i}", "createdAt": NOW}
            status, body = await self.call(
                account.node.url,
                "com.atproto.repo.createRecord",
                body={"repo": account.did, "collection": collection, "record": record},
                token=account.token,
            )
            assert status == 200, body
            path = body["uri"].split("/", 3)[3]
            out.append(Write(account.did, path, body["cid"], body["commit"]["rev"]))
        self.writes.extend(out)
        return out

    async def latest(self, url: str, did: str) -> tuple[int, Any]:
        return await self.call(url, "com.atproto.sync.getLatestCommit", params={"did": did})


def _summary(frame: Any) -> tuple[Any, ...]:
    if isinstance(frame, CommitEvent):
        return ("#commit", frame.repo, frame.rev, str(frame.commit))
    if isinstance(frame, SyncEvent):
        return ("#sync", frame.did, frame.rev)
    if isinstance(frame, AccountEvent):
        return ("#account", frame.did, frame.active, frame.status)
    return (type(frame).__name__, getattr(frame, "did", None))


@dataclass
class Watcher:
    """A verifying subscriber of the relay: every frame through :class:`FrameVerifier`."""

    url: str
    plc_url: str
    session: aiohttp.ClientSession
    cursor: int | None = 0
    seqs: list[int] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    creates: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    syncs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    accounts: list[tuple[str, bool, str | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: seq -> what the event was (type, DID, rev or status), to compare two subscribers' views.
    events: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    #: DID -> rev of the newest verified ``#commit``/``#sync`` received.
    heads: dict[str, str] = field(default_factory=dict)
    #: seq -> the frame's bytes as received, to compare two subscribers byte for byte.
    raws: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resolver = DIDResolver(plc_url=self.plc_url, session=self.session)
        self.verifier = FrameVerifier(self.resolver)
        self.subscriber = Subscriber(
            self.url, self._handle, cursor=self.cursor, session=self.session, lanes=8, backoff_max=2.0
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.subscriber.run())

    async def stop(self) -> None:
        self.subscriber.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)

    @property
    def last(self) -> int:
        cursor = self.subscriber.cursor
        return cursor if cursor is not None else 0

    async def _handle(self, received: Received) -> None:
        frame = received.frame
        if received.seq is not None:
            self.seqs.append(received.seq)
            if received.seq in self.events:
                self.problems.append(f"seq {received.seq} received twice")
            self.events[received.seq] = _summary(frame)
            self.raws[received.seq] = received.raw
        outcome = await self.verifier.check(frame)
        self.verdicts[outcome.verdict.value] += 1
        if outcome.stored and outcome.state is not None and outcome.did is not None:
            self.heads[outcome.did] = outcome.state.rev
        if outcome.verdict is Verdict.INVALID:
            self.problems.append(f"seq {received.seq}: invalid {type(frame).__name__}: {outcome.error}")
        if isinstance(frame, CommitEvent) and outcome.verdict in (
            Verdict.FIRST,
            Verdict.NEXT,
            Verdict.OUT_OF_SYNC,
        ):
            if outcome.verdict is Verdict.OUT_OF_SYNC:
                self.problems.append(f"seq {received.seq}: {frame.repo} rev {frame.rev} does not chain")
            for op in frame.ops:
                if op.action == "create":
                    if op.path in self.creates[frame.repo]:
                        self.problems.append(f"seq {received.seq}: {frame.repo}/{op.path} created twice")
                    self.creates[frame.repo][op.path] = str(op.cid)
        elif isinstance(frame, SyncEvent) and outcome.verdict is Verdict.RESTATED:
            self.syncs[frame.did].append(frame.rev)
        elif isinstance(frame, AccountEvent):
            self.accounts.append((frame.did, frame.active, frame.status))

    def accounted(self, write: Write) -> bool:
        """The write reached the verified stream: as a create op, or inside a later ``#sync``."""
        if self.creates.get(write.did, {}).get(write.path) == write.cid:
            return True
        return any(rev >= write.rev for rev in self.syncs.get(write.did, ()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def spawn_relay(args: list[str], log_path: Path) -> asyncio.subprocess.Process:
    """``atrepo relay`` as a subprocess; returns once it says it listens."""
    log = log_path.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "atrepo", "relay", *args, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    finally:
        log.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening on" in line, (line, log_path.read_text()[-2000:])
    return proc


async def stop_all(watchers: Iterable[Watcher], procs: Iterable[asyncio.subprocess.Process]) -> None:
    """A test's cleanup: every watcher stopped, then every relay process (SIGTERM, SIGKILL after 15 s)."""
    for watcher in watchers:
        with contextlib.suppress(Exception):
            await watcher.stop()
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
