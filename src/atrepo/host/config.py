"""The host's configuration: flags over ``ATREPO_*`` environment variables over a TOML file.

One frozen :class:`HostConfig` is built at start-up by :func:`load_config` and
never changes while the host runs, so every part of the host reads the same
values. Secrets (the JWT secret, the admin password, the PLC rotation key) are
kept apart from what :meth:`HostConfig.describe` prints: the effective
configuration is logged at start, and a log must never carry a secret.

Secrets that are not configured are generated once into the data directory
(:func:`load_secrets`), with mode 0600, so a host restarted on the same data
keeps issuing tokens its clients can still use and keeps controlling the
did:plc identities it created.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from atrepo.core.errors import InputFileError
from atrepo.core.keys import PrivateKey
from atrepo.core.partition import parse_partition
from atrepo.core.syntax import is_valid_did
from atrepo.store.dbfile import is_database_url
from atrepo.store.pgfile import redact_url
from atrepo.xrpc.ratelimit import RateRules, parse_limits

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PLC_PORT",
    "DEFAULT_PORT",
    "ENV_PREFIX",
    "HostConfig",
    "HostRole",
    "HostSecrets",
    "LogFormat",
    "load_config",
    "load_secrets",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 2583
DEFAULT_PLC_PORT: Final = 2582
ENV_PREFIX: Final = "ATREPO_"
JWT_SECRET_FILENAME: Final = "jwt-secret"
#: The generated admin password (HTTP Basic ``admin:<password>``) when none is configured.
ADMIN_PASSWORD_FILENAME: Final = "admin-password"
ROTATION_KEY_FILENAME: Final = "rotation.key"
PLC_DIRNAME: Final = "plc"

LogFormat = Literal["text", "json"]
#: What one ``atrepo serve`` process does: everything, or only serve the firehose and sync reads.
HostRole = Literal["host", "fanout"]

#: Settings whose values never appear in ``describe()``.
_SECRET_FIELDS: Final = frozenset({"admin_password", "jwt_secret"})
#: Settings holding lists: comma-separated in the environment, arrays in TOML.
_LIST_FIELDS: Final = frozenset({"user_domains", "relays"})
_INT_FIELDS: Final = frozenset({"port", "plc_port"})
_FLOAT_FIELDS: Final = frozenset({"event_retention_hours"})
_BOOL_FIELDS: Final = frozenset({"rate_limits", "trust_proxy", "proxy_allow_private"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
#: Rule name of the write points every repository write charges to its account (create 3, update 2, delete 1).
REPO_WRITE_RULE: Final = "repo-write"


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Everything the operator can set; see docs/host.md for the flag and variable of each."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("data")
    #: The store's database: None for SQLite in ``data_dir``, or ``postgresql://...`` for PostgreSQL
    #: (blobs, the JWT secret and keys stay in ``data_dir`` either way). Printed without its password.
    database: str | None = field(default=None, repr=False)
    #: ``http://HOST:PORT`` when unset (resolved once the port is bound, so port 0 works).
    public_url: str | None = None
    #: Handle suffixes accounts may be created under (each starts with ``.``).
    user_domains: tuple[str, ...] = (".test",)
    admin_password: str | None = field(default=None, repr=False)
    #: HS256 secret for session tokens; generated into ``<data>/jwt-secret`` when unset.
    jwt_secret: str | None = field(default=None, repr=False)
    #: An outside PLC directory; when unset, the host runs its own on ``plc_port``.
    plc_url: str | None = None
    plc_port: int = DEFAULT_PLC_PORT
    #: Relays to notify with ``requestCrawl`` (none by default).
    relays: tuple[str, ...] = ()
    event_retention_hours: float = 72.0
    log_format: LogFormat = "text"
    #: Rate limits on (the reference PDS's figures; docs/host.md "Rate limits"). Each limit below is
    #: ``POINTS/WINDOW[,POINTS/WINDOW]`` (``3000/5m``, ``300/1d``), or ``none``.
    rate_limits: bool = True
    #: Key per-client limits by the last ``X-Forwarded-For`` entry (set behind a reverse proxy only).
    trust_proxy: bool = False
    rate_limit_global: str = "3000/5m"
    rate_limit_create_session: str = "30/5m,300/1d"
    rate_limit_create_account: str = "100/5m"
    rate_limit_repo_writes: str = "5000/1h,35000/1d"
    rate_limit_upload_blob: str = "1000/1d"
    rate_limit_get_repo: str = "6000/5m"
    #: The AppView ``app.*`` calls are proxied to (URL and service DID, both or neither);
    #: without one the host answers a few ``app.bsky`` methods itself (docs/host.md).
    appview_url: str | None = None
    appview_did: str | None = None
    #: Let ``atproto-proxy`` reach services over plain http or on loopback/private addresses
    #: (development; the reference's ``PDS_DISABLE_SSRF_PROTECTION``).
    proxy_allow_private: bool = False
    #: ``I/N`` in worker process I of ``atrepo serve --workers N`` (the supervisor sets it): the port
    #: is shared with the other workers (``SO_REUSEPORT``) and only worker 0 runs the maintenance.
    worker: str | None = None
    #: ``host`` (everything) or ``fanout``: a read-only process on a PostgreSQL store that serves the
    #: firehose and the sync reads, following the event log the host processes write (docs/scaling.md).
    role: HostRole = "host"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or not 0 <= self.plc_port <= 65535:
            raise ValueError("ports must be between 0 and 65535")
        if self.worker is not None:
            try:
                slot = parse_partition(self.worker)
            except ValueError as exc:
                raise ValueError(f"worker: {exc}") from None
            if self.database is None:
                raise ValueError(
                    f"worker {slot[0]}/{slot[1]}: several host processes need a postgresql:// database"
                )
        if self.role not in ("host", "fanout"):
            raise ValueError(f"role must be host or fanout, not {self.role!r}")
        if self.role == "fanout" and self.database is None:
            raise ValueError("a fanout process follows a host's postgresql:// database: give database")
        for domain in self.user_domains:
            if not domain.startswith(".") or len(domain) < 2:
                raise ValueError(f"a user domain starts with '.', like '.test': {domain!r}")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"public URL must be http(s)://host[:port]: {self.public_url!r}")
        if self.database is not None and not is_database_url(self.database):
            raise ValueError(f"database must be a postgresql:// URL, not {redact_url(self.database)!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log format must be text or json, not {self.log_format!r}")
        if self.event_retention_hours <= 0:
            raise ValueError("event retention must be positive")
        if (self.appview_url is None) != (self.appview_did is None):
            raise ValueError("an AppView needs both its URL and its DID (appview_url, appview_did)")
        if self.appview_url is not None:
            parts = urlsplit(self.appview_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"AppView URL must be http(s)://host[:port]: {self.appview_url!r}")
        if self.appview_did is not None and not is_valid_did(self.appview_did):
            raise ValueError(f"AppView DID is not a DID: {self.appview_did!r}")
        self.rate_rules()  # a bad limit stops the host at start

    def rate_rules(self) -> RateRules:
        """The limits the settings name: global per IP, per-IP methods, and those keyed by handlers.

        Keyed rules are named by the method's NSID (``createSession`` is keyed
        by identifier and IP, ``createAccount`` and ``uploadBlob`` by IP) and
        ``REPO_WRITE_RULE`` (points per DID). ``getRepo`` has its own per-IP
        limit and skips the global one, as in the reference.
        """
        return RateRules(
            global_ip=parse_limits("global-ip", self.rate_limit_global),
            per_ip={"com.atproto.sync.getRepo": parse_limits("getRepo", self.rate_limit_get_repo)},
            keyed={
                "com.atproto.server.createSession": parse_limits(
                    "createSession", self.rate_limit_create_session
                ),
                "com.atproto.server.createAccount": parse_limits(
                    "createAccount", self.rate_limit_create_account
                ),
                "com.atproto.repo.uploadBlob": parse_limits("uploadBlob", self.rate_limit_upload_blob),
                REPO_WRITE_RULE: parse_limits("repo-write", self.rate_limit_repo_writes),
            },
            global_exempt=frozenset({"com.atproto.sync.getRepo", "com.atproto.sync.subscribeRepos"}),
        )

    def resolved_public_url(self, bound_port: int | None = None) -> str:
        """The public URL, defaulting to where we listen (``bound_port``: the port actually bound)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{bound_port if bound_port is not None else self.port}"

    @property
    def plc_dir(self) -> Path:
        return self.data_dir / PLC_DIRNAME

    @property
    def worker_slot(self) -> tuple[int, int] | None:
        """(I, N) in worker process I of N, None in a host that runs alone."""
        return parse_partition(self.worker) if self.worker is not None else None

    @property
    def runs_maintenance(self) -> bool:
        """Whether this process prunes old events, tokens and blobs (one host process of several does)."""
        slot = self.worker_slot
        return self.role == "host" and (slot is None or slot[0] == 0)

    def describe(self, *, bound_port: int | None = None, plc_url: str | None = None) -> dict[str, Any]:
        """The effective configuration for the start-up log: secrets say only whether they are set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                out[f.name] = "(set)" if value is not None else "(unset)"
            elif isinstance(value, Path):
                out[f.name] = str(value)
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        out["database"] = redact_url(self.database) if self.database else f"(SQLite in {self.data_dir})"
        out["public_url"] = self.resolved_public_url(bound_port)
        if self.plc_url is None:
            out["plc_url"] = plc_url or f"(embedded directory on port {self.plc_port})"
        if self.jwt_secret is None:
            out["jwt_secret"] = f"(from {self.data_dir / JWT_SECRET_FILENAME})"
        return out


def _convert(name: str, value: Any, source: str) -> Any:
    """A raw flag, variable or TOML value as the field's type (strings from the environment)."""
    try:
        if name in _LIST_FIELDS:
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise TypeError("expected a list of strings")
        if name in _INT_FIELDS:
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
        if name in _BOOL_FIELDS:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise TypeError("expected true or false")
        if name == "data_dir":
            return Path(value)
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    except (TypeError, ValueError) as exc:
        raise InputFileError(f"{source}: bad value for {name}: {value!r} ({exc})") from None


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> HostConfig:
    """Merge the sources, highest first: ``flags`` (None values ignored), ``ATREPO_<NAME>``, the TOML file.

    Names are the :class:`HostConfig` field names (``ATREPO_PUBLIC_URL``, TOML
    ``public_url = "..."``). ``ATREPO_CONFIG`` names the TOML file when
    ``config_file`` is None. Unknown TOML keys are refused: a typo there would
    otherwise silently leave a default in force.
    """
    environ = os.environ if env is None else env
    names = {f.name for f in fields(HostConfig)}
    merged: dict[str, Any] = {}
    path = config_file or (
        Path(environ[f"{ENV_PREFIX}CONFIG"]) if environ.get(f"{ENV_PREFIX}CONFIG") else None
    )
    if path is not None:
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InputFileError(f"cannot read config file {path}: {exc}") from None
        unknown = sorted(set(table) - names)
        if unknown:
            raise InputFileError(f"{path}: unknown settings {', '.join(unknown)}")
        for name, value in table.items():
            merged[name] = _convert(name, value, str(path))
    for name in names:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            merged[name] = _convert(name, value, ENV_PREFIX + name.upper())
    for name, value in (flags or {}).items():
        if name not in names:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None:
            merged[name] = _convert(name, value, f"--{name.replace('_', '-')}")
    try:
        return HostConfig(**merged)
    except ValueError as exc:
        raise InputFileError(f"configuration: {exc}") from None


@dataclass(frozen=True, slots=True)
class HostSecrets:
    """The secrets the host signs with; never logged, never in ``describe()``."""

    jwt_secret: str = field(repr=False)
    rotation_key: PrivateKey = field(repr=False)
    #: HTTP Basic ``admin:<password>`` of ``com.atproto.admin.*`` (configured or generated).
    admin_password: str = field(default="", repr=False)
    #: Where the generated admin password is kept (None when it was configured).
    admin_password_file: Path | None = None


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only; an existing file is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_or_create(path: Path, make: Any) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    text: str = make()
    try:
        _write_private(path, text)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    return text


def load_secrets(config: HostConfig) -> HostSecrets:
    """The JWT secret (configured or ``<data>/jwt-secret``) and PLC rotation key (``<data>/rotation.key``).

    Both files are created on first start with mode 0600 and kept forever:
    a new JWT secret would log every client out, and a new rotation key would
    lose control of every did:plc this host created.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    jwt_secret = config.jwt_secret
    if jwt_secret is None:
        jwt_secret = _read_or_create(config.data_dir / JWT_SECRET_FILENAME, lambda: secrets.token_hex(32))
    if not jwt_secret:
        raise InputFileError("the JWT secret is empty")
    key_path = config.data_dir / ROTATION_KEY_FILENAME
    key_text = _read_or_create(key_path, lambda: PrivateKey.generate("k256").to_multibase())
    # The admin password, like the JWT secret: generated once (0600) unless configured.
    admin_file: Path | None = None
    admin_password = config.admin_password
    if admin_password is None:
        admin_file = config.data_dir / ADMIN_PASSWORD_FILENAME
        admin_password = _read_or_create(admin_file, lambda: secrets.token_urlsafe(24))
    if not admin_password:
        raise InputFileError("the admin password is empty")
    return HostSecrets(
        jwt_secret=jwt_secret,
        rotation_key=PrivateKey.from_multibase(key_text),
        admin_password=admin_password,
        admin_password_file=admin_file,
    )
