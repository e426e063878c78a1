"""``atrepo account ...`` as a real process against a real host: the operator's commands end to end."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_support import HostClient

from atrepo.core.events import AccountEvent, decode_frame

#: Each command is a fresh Python process: generous, but bounded.
CLI_TIMEOUT_S = 40


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def atrepo(*args: str, env: dict[str, str] | None = None) -> Done:
    """Run the CLI without blocking the event loop the host under test runs on."""
    environ = {k: v for k, v in os.environ.items() if k != "ATREPO_ADMIN_PASSWORD"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atrepo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def data_dir(host: HostClient) -> str:
    return str(host.running.context.config.data_dir)


async def test_operator_commands_against_a_running_host(host: HostClient) -> None:
    url = host.url
    data = data_dir(host)
    created = await atrepo(
        "account", "create", "--url", url, "--handle", "alice.test", "--password", "pw1", "--json"
    )
    assert created.returncode == 0, created.stderr
    alice = created.json()
    did = alice["did"]
    assert alice["ok"] is True and alice["handle"] == "alice.test"
    bob = await atrepo("account", "create", "--url", url, "--handle", "bob.test", "--password", "pw2")
    assert bob.returncode == 0 and bob.stdout.startswith("created bob.test did:plc:")

    # list: admin password read from the data directory's generated file
    listed = await atrepo("account", "list", "--url", url, "--data", data, "--json")
    assert listed.returncode == 0, listed.stderr
    accounts = listed.json()["accounts"]
    assert [(a["handle"], a["status"]) for a in accounts] == [
        ("alice.test", "active"),
        ("bob.test", "active"),
    ]
    text = await atrepo("account", "list", "--url", url, "--data", data)
    assert "alice.test" in text.stdout and "2 account(s)" in text.stdout

    # takedown by handle, password from the environment
    env = {"ATREPO_ADMIN_PASSWORD": host.running.context.secrets.admin_password}
    before = host.running.context.store.head_seq()
    down = await atrepo(
        "account", "takedown", "alice.test", "--ref", "case-9", "--url", url, "--json", env=env
    )
    assert down.returncode == 0, down.stderr
    assert down.json() == {"ok": True, "did": did, "status": "takendown"}
    (event,) = [decode_frame(r.frame) for r in host.running.context.store.read_events(before, 10)]
    assert isinstance(event, AccountEvent) and event.status == "takendown"
    info = await atrepo("account", "info", did, "--url", url, "--data", data, "--json")
    assert info.returncode == 0, info.stderr
    shown = info.json()
    assert shown["status"] == "takendown" and shown["takedown"] == {"applied": True, "ref": "case-9"}
    info_text = await atrepo("account", "info", "alice.test", "--url", url, "--data", data)
    assert "takedown: case-9" in info_text.stdout and "status: takendown" in info_text.stdout

    back = await atrepo("account", "reverse-takedown", did, "--url", url, "--data", data)
    assert back.returncode == 0, back.stderr
    assert "status active" in back.stdout

    # reset-password: a random one, printed once
    reset = await atrepo("account", "reset-password", "alice.test", "--url", url, "--data", data, "--json")
    assert reset.returncode == 0, reset.stderr
    new_password = reset.json()["password"]
    login = await host.call(
        "com.atproto.server.createSession", body={"identifier": "alice.test", "password": new_password}
    )
    assert login.status == 200

    # delete-token: what the owner asked for, read by the operator
    asked = await host.call(
        "com.atproto.server.requestAccountDelete", token=login.body["accessJwt"], method="POST"
    )
    assert asked.status == 200
    token = await atrepo("account", "delete-token", "alice.test", "--url", url, "--data", data, "--json")
    assert token.returncode == 0, token.stderr
    stored = host.running.context.store.get_email_token(did, "delete_account")
    assert stored is not None and token.json()["token"] == stored.token

    # delete: refused without --yes on a closed stdin, done with it
    refused = await atrepo("account", "delete", did, "--url", url, "--data", data)
    assert refused.returncode != 0
    assert host.running.context.store.get_account(did) is not None
    deleted = await atrepo("account", "delete", did, "--yes", "--url", url, "--data", data, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.json() == {"ok": True, "did": did, "status": "deleted"}
    assert host.running.context.store.get_account(did) is None


async def test_clear_errors_and_exit_code_1(host: HostClient, tmp_path: Path) -> None:
    url = host.url
    data = data_dir(host)
    wrong = await atrepo("account", "list", "--url", url, "--admin-password", "wrong")
    assert wrong.returncode == 1
    assert "AuthenticationRequired: Authentication Required" in wrong.stderr
    wrong_json = await atrepo("account", "list", "--url", url, "--admin-password", "wrong", "--json")
    assert wrong_json.returncode == 1
    assert json.loads(wrong_json.stdout)["error"]["message"] == (
        "the host answered AuthenticationRequired: Authentication Required"
    )
    nothing = await atrepo("account", "list", "--url", url, "--data", str(tmp_path / "elsewhere"))
    assert nothing.returncode == 1 and "no admin password" in nothing.stderr
    unknown = await atrepo(
        "account", "info", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "--url", url, "--data", data
    )
    assert unknown.returncode == 1 and "NotFound: Account not found" in unknown.stderr
    no_handle = await atrepo("account", "takedown", "nobody.test", "--url", url, "--data", data)
    assert no_handle.returncode == 1 and "HandleNotFound" in no_handle.stderr
    no_token = await atrepo(
        "account", "create", "--url", url, "--handle", "carol.test", "--password", "pw", "--json"
    )
    assert no_token.returncode == 0
    pending = await atrepo("account", "delete-token", "carol.test", "--url", url, "--data", data)
    assert pending.returncode == 1 and "No pending token" in pending.stderr
    unreachable = await atrepo("account", "list", "--url", "http://127.0.0.1:9", "--admin-password", "x")
    assert unreachable.returncode == 1 and "cannot reach the host" in unreachable.stderr
