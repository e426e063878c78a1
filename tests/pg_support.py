"""A throwaway PostgreSQL cluster for the tests: started once per test session, on loopback.

Why: the stores' PostgreSQL backends are tested against a real server, as
SQLite is tested against real files. With ``ATREPO_TEST_POSTGRES`` set to a
URL of a server the tests may create databases on (a superuser's), that
server is used; otherwise this module finds PostgreSQL's ``initdb`` and
``pg_ctl`` (``PATH``, ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``),
creates a cluster in a temporary directory (as the ``postgres`` user when the
tests run as root, which ``initdb`` refuses), starts it on a free loopback
port with trust authentication, and stops and removes it at exit. Each test
gets its own database (:meth:`Cluster.new_database`), dropped afterwards,
whose default collation is ICU's en-US where the server has ICU (so byte
order must come from the stores' own ``COLLATE "C"``).

No PostgreSQL on the machine is an error, not a skip: ``.ci/run`` installs it.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["Cluster", "cluster"]


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    config = shutil.which("pg_config")
    if config:
        out = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError(
        "PostgreSQL is needed by the PostgreSQL store tests and was not found (no initdb): install it "
        "(Debian: apt-get install postgresql) or set ATREPO_TEST_POSTGRES to a server's URL"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A PostgreSQL server the tests own (or were given): its admin URL and fresh databases."""

    def __init__(self, *, own: bool = False) -> None:
        """``own``: start a server here even with ``ATREPO_TEST_POSTGRES`` set (a test that crashes it)."""
        self._counter = itertools.count()
        self._dir: str | None = None
        self._pg_ctl: list[str] = []
        self._options = ""
        given = "" if own else os.environ.get("ATREPO_TEST_POSTGRES", "").strip()
        if given:
            self.admin_url = given
            return
        bindir = _bindir()
        self._dir = tempfile.mkdtemp(prefix="atrepo-pg-")
        os.chmod(self._dir, 0o755)
        data = os.path.join(self._dir, "data")
        prefix: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self._dir, user.pw_uid, user.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        port = _free_port()
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
            " -c shared_buffers=64MB"
        )
        self._pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", data]
        self._options = options
        self.start()
        atexit.register(self.stop)
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        """Start the server (again, after :meth:`crash`: it recovers from its WAL first)."""
        assert self._dir is not None, "not a cluster this module started"
        subprocess.run(
            [
                *self._pg_ctl,
                "-l",
                os.path.join(self._dir, "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                self._options,
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def crash(self) -> None:
        """Stop the server as a crash would (``immediate``: no checkpoint, every connection cut)."""
        assert self._dir is not None, "not a cluster this module started"
        subprocess.run([*self._pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, check=True)

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server (the admin URL's user and address)."""
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def new_database(self) -> str:
        """Create an empty database for one test; its URL."""
        import psycopg

        name = f"atrepo_t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                # A linguistic default collation, as most servers have ("a" < "B"): the stores must
                # get byte order from their own COLLATE "C", not from the cluster's --no-locale.
                conn.execute(
                    f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                )
            except psycopg.errors.FeatureNotSupported:  # a server built without ICU
                conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rpartition("/")[2]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server this module started and remove its directory (a second call does nothing)."""
        if self._dir is None:
            return
        directory, self._dir = self._dir, None
        subprocess.run([*self._pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


_cluster: Cluster | None = None


def cluster() -> Cluster:
    """The session's cluster, started on first use."""
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
    return _cluster
