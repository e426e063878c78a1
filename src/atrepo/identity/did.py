"""DID methods atproto supports, and where each one's document lives (pure).

Three outcomes stay distinct: bad syntax (:class:`InvalidSyntax`), a valid DID
of a method we do not resolve (:class:`UnsupportedDIDMethod`), and, later, a
lookup that fails (:class:`ResolutionError`).
"""

from __future__ import annotations

import re
from typing import Final

from atrepo.core.errors import InvalidSyntax, UnsupportedDIDMethod
from atrepo.core.syntax import is_valid_handle, validate_did
from atrepo.identity.hostname import tld_problem

SUPPORTED_METHODS: Final = ("plc", "web")
_PLC_RE: Final = re.compile(r"did:plc:[a-z2-7]{24}")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_LOCALHOST: Final = "localhost"


def did_method(did: str) -> str:
    """Validate DID syntax and return its method, refusing unsupported ones."""
    validate_did(did)
    method = did.split(":", 2)[1]
    if method not in SUPPORTED_METHODS:
        raise UnsupportedDIDMethod(f"DID method {method!r} is not supported ({did}); atproto uses plc, web")
    if method == "plc":
        validate_plc_did(did)
    return method


def validate_plc_did(did: str) -> None:
    """``did:plc:`` + 24 lower-case base32 characters, nothing else."""
    if _PLC_RE.fullmatch(did) is None:
        raise InvalidSyntax("did", did, "did:plc identifier must be 24 characters of [a-z2-7]")


def did_web_url(did: str, *, dev: bool = False) -> str:
    """The ``/.well-known/did.json`` URL of a hostname-level did:web.

    Only ``localhost`` may carry a port (``did:web:localhost%3A8080``) and is
    fetched over plain http; every other host is https on the default port.
    """
    validate_did(did)
    if not did.startswith("did:web:"):
        raise InvalidSyntax("did", did, "not a did:web")
    ident = did[len("did:web:") :]
    if ":" in ident:
        raise UnsupportedDIDMethod(f"path-based did:web is not supported ({did})")
    host, sep, port = ident.partition("%3A")
    if not sep and "%" in ident:
        raise InvalidSyntax("did", did, "did:web may only percent-encode the port separator (%3A)")
    if host.lower() == _LOCALHOST:
        if sep and (_PORT_RE.fullmatch(port) is None or not 0 < int(port) < 65536):
            raise InvalidSyntax("did", did, "did:web port must be a number from 1 to 65535")
        return f"http://{_LOCALHOST}{':' + port if sep else ''}/.well-known/did.json"
    if sep:
        raise UnsupportedDIDMethod(f"did:web with a port is only supported for localhost ({did})")
    if not is_valid_handle(host):
        raise InvalidSyntax("did", did, "did:web host is not a valid hostname")
    problem = tld_problem(host, dev=dev)
    if problem is not None:
        raise UnsupportedDIDMethod(f"{did}: {problem}")
    return f"https://{host.lower()}/.well-known/did.json"
