"""The relay's status page over HTTP: the JSON document, the HTML with its tables, headers, escaping.

The same page in a real browser (script, policy, refreshed tables) is
``test_relay_status_browser.py``. The table kind itself is checked here on
:func:`render_html` directly, and the host's page (which has no table) keeps
its own tests in ``tests/host/test_status*.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from relay_testenv import ADMIN_PASSWORD, RelayEnv, RelayEnvFactory, request

from atrepo.firehose.subscriber import Received, Subscriber
from atrepo.store.relay import RelayStore
from atrepo.xrpc.status_page import CSP, Column, Fact, StatusPage, Table, render_html

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTILE = "<script>alert('x')</script>&\"<img src=x onerror=alert(1)>"


async def page(env: RelayEnv) -> tuple[int, dict[str, str], str]:
    async with env.http.get(f"{env.url}/", headers={"Accept": BROWSER_ACCEPT}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def table_rows(html: str, key: str) -> list[list[str]]:
    """The cell texts of the table of ``key`` in server-rendered ``html`` (still escaped)."""
    match = re.search(rf'<table data-table="{re.escape(key)}"[^>]*>.*?<tbody>(.*?)</tbody>', html, re.S)
    assert match is not None, f"no table {key}"
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", match[1], re.S)
    ]


# --- the table kind ------------------------------------------------------------------------------


def test_table_renders_rows_escaped_and_an_empty_row() -> None:
    table = Table(
        "things.list",
        (Column("Name", "name"), Column("Count", "n", "count"), Column("Deep", "a.b", unit="ms")),
        empty="nothing yet",
    )
    page_ = StatusPage("t", (("Things", (Fact("Total", "things.total", "count"), table)),), "text", wide=True)
    doc: dict[str, Any] = {
        "things": {
            "total": 1234,
            "list": [{"name": HOSTILE, "n": 5000, "a": {"b": 3}}, {"name": None}, "junk"],
        }
    }
    html = render_html(page_, doc)
    assert HOSTILE not in html and "<script>alert" not in html
    assert 'class="wide"' in html
    assert '<dd data-key="things.total" data-kind="count" data-unit="">1,234</dd>' in html
    rows = table_rows(html, "things.list")
    assert rows[0] == [
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;&lt;img src=x onerror=alert(1)&gt;",
        "5,000",
        "3 ms",
    ]
    assert rows[1] == ["\u2014", "\u2014", "\u2014"]  # missing values, like facts
    assert rows[2] == ["\u2014", "\u2014", "\u2014"]  # an item that is not an object
    assert '<th scope="col" data-col="a.b" data-kind="text" data-unit="ms">Deep</th>' in html
    # the facts and the table share a section: the list closes before the table
    assert html.index("</dl>") < html.index("<table")
    empty = render_html(page_, {"things": {"total": 0, "list": []}})
    assert table_rows(empty, "things.list") == [["nothing yet"]]
    assert '<tr class="empty"><td colspan="3">nothing yet</td></tr>' in empty
    assert table_rows(render_html(page_, {}), "things.list") == [["nothing yet"]]
    assert page_.facts() == [Fact("Total", "things.total", "count")] and page_.tables() == [table]


# --- the relay's page ----------------------------------------------------------------------------


async def test_status_json_lists_hosts_accounts_and_events(relay_env: RelayEnv) -> None:
    env = relay_env
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 3)
    await env.wait_relayed(alice)
    link = next(iter(env.relay.context.hosts.links.values()))

    async def durable() -> dict[str, Any] | None:
        doc = await env.status()  # the counts the store has: the last batch may still be committing
        return doc if doc["accounts"]["total"] == 1 and doc["events"]["emittedSinceStart"] >= 4 else None

    doc = await env.wait_for(durable, what="the account and its commits committed")
    assert doc["software"]["role"] == "relay"
    assert doc["service"]["plcUrl"] == env.hosts[0].plc_url
    assert doc["service"]["lenient"] is False and doc["service"]["workers"] == 0
    assert doc["hosts"]["total"] == 1 and doc["hosts"]["byStatus"] == {"active": 1}
    (row,) = doc["hosts"]["list"]
    assert row["hostname"] == link.key and row["status"] == "active"
    assert row["accounts"] == 1 and row["accountLimit"] == env.config.trusted_account_limit
    assert row["cursor"] is not None and row["cursor"] > 0
    assert row["connected"] is True and row["lastError"] is None
    assert row["eventsPerMinute"] >= 1  # this minute's or the last one's
    assert doc["accounts"]["total"] == 1 and doc["accounts"]["byStatus"]["active"] == 1
    assert doc["events"]["headSeq"] >= 4 and doc["events"]["emittedSinceStart"] >= 4
    assert doc["events"]["batches"] >= 1
    assert doc["desynchronized"] == {"count": 0, "list": []}
    assert doc["resyncs"] == {"queued": 0, "active": 0, "done": 0, "failed": 0}
    assert doc["subscribers"] == {"count": 0, "list": []}
    assert doc["faults"]["verificationByCheck"] == {}

    status, headers, html = await page(env)
    assert status == 200 and headers["Content-Security-Policy"] == CSP
    assert headers["Content-Type"].startswith("text/html")
    rows = table_rows(html, "hosts.list")
    assert rows[0][:3] == [link.key, "active", "yes"]
    assert table_rows(html, "desynchronized.list") == [["none: every account follows its host"]]
    assert ADMIN_PASSWORD not in html and ADMIN_PASSWORD not in str(doc)

    # curl and SDKs get the short text, as before the page
    plain = await request(env.http, "GET", f"{env.url}/")
    assert plain.status == 200 and plain.body is None
    async with env.http.get(f"{env.url}/") as resp:
        assert resp.content_type == "text/plain" and "relay" in await resp.text()
    for asset in ("/status.js", "/status.css", "/status.svg"):
        async with env.http.get(f"{env.url}{asset}") as resp:
            assert resp.status == 200 and resp.headers["Content-Security-Policy"] == CSP


async def test_faults_show_by_check_and_escaped(relay_env: RelayEnv) -> None:
    env = relay_env
    ingest = env.relay.context.ingest
    ingest.fault("invalid-signature", "pds.example.com", "did:plc:abc", HOSTILE)
    ingest.fault("invalid-signature", "pds.example.com", "did:plc:abc", "again")
    ingest.fault("authority", "pds.example.com", "did:plc:def", "names another host")
    doc = await env.status()
    assert doc["faults"]["verificationByCheck"] == {"signature": 2}
    assert doc["faults"]["byKind"] == {"authority": 1, "invalid-signature": 2}
    recent = doc["faults"]["recent"]
    assert [f["kind"] for f in recent] == [
        "authority",
        "invalid-signature",
        "invalid-signature",
    ]  # newest first
    assert recent[2]["reason"] == HOSTILE and recent[2]["did"] == "did:plc:abc"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", recent[0]["time"])
    _, _, html = await page(env)
    assert HOSTILE not in html
    rows = table_rows(html, "faults.recent")
    assert [r[1] for r in rows] == ["authority", "invalid-signature", "invalid-signature"]
    assert rows[2][4].startswith("&lt;script&gt;")
    assert "signature: 2" in html


async def test_desynchronized_accounts_are_listed_with_their_host(relay_env: RelayEnv) -> None:
    env = relay_env
    alice = await env.create_account("alice.test")
    bob = await env.create_account("bob.test")
    await env.create_records(alice, 1)
    await env.wait_relayed(alice)
    await env.wait_relayed(bob)
    ctx = env.relay.context
    account = await ctx.ingest.account(bob.did)
    assert account is not None
    # as the ingest marks an account out of step (without starting the fetch that would restate it)
    ctx.ingest.stage(dataclasses.replace(account, status="desynchronized"))

    async def stored() -> list[str]:
        rows = await ctx.worker.read(RelayStore.list_accounts_by_status, "desynchronized")
        return [a.did for a in rows]

    assert await env.wait_for(stored, what="the desynchronized account stored") == [bob.did]
    assert await ctx.worker.read(RelayStore.list_accounts_by_status, "desynchronized", after=bob.did) == []
    doc = await env.status()
    link = next(iter(ctx.hosts.links.values()))
    assert doc["desynchronized"]["count"] == 1
    (row,) = doc["desynchronized"]["list"]
    assert row["did"] == bob.did and row["host"] == link.key and row["resyncing"] is False
    _, _, html = await page(env)
    assert table_rows(html, "desynchronized.list")[0][:2] == [bob.did, link.key]


async def test_subscribers_are_listed(relay_env: RelayEnv) -> None:
    env = relay_env
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 2)
    await env.wait_relayed(alice)
    got: list[int] = []

    async def handle(received: Received) -> None:
        got.append(received.seq)

    subscriber = Subscriber(env.url, handle, cursor=0)
    task = asyncio.get_running_loop().create_task(subscriber.run())
    try:
        fanout = env.relay.context.fanout

        async def caught_up() -> bool:
            doc = await env.status()
            rows = doc["subscribers"]["list"]
            return doc["subscribers"]["count"] == 1 and rows[0]["lastSeq"] == fanout.tail and rows[0]["live"]

        await env.wait_for(caught_up, what="the subscriber listed at the head")
        head = fanout.tail
        (row,) = (await env.status())["subscribers"]["list"]
        assert row["behind"] == 0 and row["live"] is True
        _, _, html = await page(env)
        assert table_rows(html, "subscribers.list")[0][:3] == [f"{head:,}", "0", "yes"]
    finally:
        subscriber.stop()
        await task
    assert got and got[-1] == head


async def test_docs_list_every_relay_metric(relay_env: RelayEnv) -> None:
    """docs/relay.md names every ``atrepo_relay_*`` series the relay serves, and no other."""
    env = relay_env
    alice = await env.create_account("alice.test")
    await env.wait_relayed(alice)
    async with env.http.get(f"{env.url}/metrics") as resp:
        text = await resp.text()
    served = set(re.findall(r"^# TYPE (atrepo_relay_[a-z_]+) ", text, re.M))
    docs = Path(__file__).parents[2] / "docs" / "relay.md"
    documented = set(re.findall(r"^\| `(atrepo_relay_[a-z_]+)` \|", docs.read_text(), re.M))
    assert served and served == documented, (served - documented, documented - served)


async def test_a_postgresql_store_is_shown_without_its_password(
    relay_env_factory: RelayEnvFactory, pg_url: str
) -> None:
    """``--database`` on the status page: the server, database and schema, never the password."""
    parts = urlsplit(pg_url)
    user, _, address = parts.netloc.rpartition("@")
    with_password = urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:s3cret-pw@{address}"))
    env = await relay_env_factory(database=with_password)  # the test server trusts loopback
    alice = await env.create_account("alice.test")
    await env.wait_relayed(alice)
    doc = await env.status()
    store = doc["service"]["store"]
    assert "atrepo_relay" in store and ":***@" in store and address in store, store
    assert doc["software"]["role"] == "relay" and doc["service"]["role"] == "all"
    assert "s3cret-pw" not in str(doc)
    status, _, html = await page(env)
    assert status == 200 and "s3cret-pw" not in html and "atrepo_relay" in html
