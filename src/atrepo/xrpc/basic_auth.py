"""HTTP Basic ``admin:<password>``: the one check every service's admin routes share, and its password file.

The host's ``com.atproto.admin.*`` and the relay's ``/admin/*`` take the same
credentials (what goat and the reference's tooling send: ``Authorization:
Basic base64("admin:" + password)``), so the check lives here, below both,
and is written once: the header split at the first ``:``, the password
compared in constant time, and every malformed header simply "no" (the
caller answers one 401 whatever was wrong, so a prober learns nothing).

:func:`admin_password` is the relay's way to get a password when none is
configured: generated once into a file readable by its owner only (mode
0600, never overwritten, the first writer wins a race), so a restart on the
same data keeps it. The host keeps its own in ``atrepo.host.config`` with
its other secrets.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

__all__ = ["ADMIN_USER", "admin_password", "check_basic"]

#: The only user name the admin routes accept.
ADMIN_USER: Final = "admin"


def check_basic(header: str | None, password: str) -> bool:
    """Whether ``header`` is ``Basic base64(admin:<password>)`` (constant-time on the password).

    An empty ``password`` never matches: a service without one has no admin.
    """
    if not header or not password:
        return False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, sep, given = decoded.partition(":")
    if not sep:
        return False
    ok_password = hmac.compare_digest(given.encode(), password.encode())
    return user == ADMIN_USER and ok_password


def admin_password(path: Path) -> str:
    """The password kept in ``path``, created (mode 0600) with a new random one when missing.

    An existing file is read, never rewritten; when two processes race to
    create it, both end up with the first one's password.
    """
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        pass
    else:
        if text:
            return text
        raise ValueError(f"the admin password file {path} is empty")
    text = secrets.token_urlsafe(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return text
