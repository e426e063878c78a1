"""The PLC directory over real HTTP on 127.0.0.1: accepts, rejects, never corrupts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from plc_chain import HOUR_MS, KEYS, genesis, update

from atrepo.identity.plc.operations import build_tombstone, operation_cid, verify_audit_log
from atrepo.identity.plc.server import create_app
from atrepo.identity.plc.store import StoreSettings
from conftest import FakeClock, serve

A, B, C, D = KEYS[0], KEYS[1], KEYS[2], KEYS[3]


async def post(http: aiohttp.ClientSession, url: str, op: Any) -> tuple[int, Any]:
    async with http.post(url, json=op) as resp:
        return resp.status, await resp.json()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def audit(http: aiohttp.ClientSession, base: str, did: str) -> Any:
    status, body = await get(http, f"{base}/{did}/log/audit")
    assert status == 200
    return body


async def test_create_update_and_read(http: aiohttp.ClientSession, fake_clock: FakeClock) -> None:
    async with serve(create_app(clock=fake_clock)) as base:
        did, op = genesis([A, B], A, handle="alice.example.com")
        status, body = await post(http, f"{base}/{did}", op)
        assert status == 200 and body["cid"] == operation_cid(op)
        assert body["createdAt"] == (await audit(http, base, did))[0]["createdAt"]
        async with http.get(f"{base}/{did}") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/did+ld+json"
            doc = await resp.json(content_type=None)
        assert doc["id"] == did and doc["alsoKnownAs"] == ["at://alice.example.com"]
        assert doc["verificationMethod"][0]["publicKeyMultibase"] == A.public_key.multikey()

        fake_clock.advance(1000)
        op2 = update(operation_cid(op), B, [A, B], handle="bob.example.com", signing=C)
        status, _ = await post(http, f"{base}/{did}", op2)
        assert status == 200
        status, data = await get(http, f"{base}/{did}/data")
        assert status == 200
        assert data["verificationMethods"] == {"atproto": C.public_key.did_key()}
        assert data["alsoKnownAs"] == ["at://bob.example.com"]
        assert data["rotationKeys"] == [A.public_key.did_key(), B.public_key.did_key()]
        assert await get(http, f"{base}/{did}/log") == (200, [op, op2])
        assert await get(http, f"{base}/{did}/log/last") == (200, op2)
        log = await audit(http, base, did)
        assert [e["cid"] for e in log] == [operation_cid(op), operation_cid(op2)]
        assert verify_audit_log(log).state is not None


async def test_rejections_leave_state_unchanged(http: aiohttp.ClientSession, fake_clock: FakeClock) -> None:
    async with serve(create_app(clock=fake_clock)) as base:
        did, op = genesis([A, B], A)
        assert (await post(http, f"{base}/{did}", op))[0] == 200
        head = operation_cid(op)
        fake_clock.advance(1000)
        hijack = update(head, B, [B], handle="evil.example.com")
        assert (await post(http, f"{base}/{did}", hijack))[0] == 200
        before = await audit(http, base, did)

        attempts: list[tuple[Any, str]] = [
            (update(operation_cid(hijack), D, [D]), "signature"),  # forged: D is no rotation key
            (op, "prev"),  # replayed genesis
            (hijack, "nullification-priority"),  # replayed update
            ({**update(operation_cid(hijack), B, [B]), "sig": "AAAA"}, "signature-encoding"),
            ({**update(operation_cid(hijack), B, [B]), "extra": 1}, "format"),
            (update("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm", B, [B]), "prev"),
            ([1, 2], "format"),
        ]
        for bad, rule in attempts:
            status, body = await post(http, f"{base}/{did}", bad)
            assert status == 400, body
            assert body["message"].startswith(rule + ":"), body
        # Out of the recovery window: A outranks B, but 72 h have passed.
        fake_clock.advance(72 * HOUR_MS + 1)
        status, body = await post(http, f"{base}/{did}", update(head, A, [A]))
        assert status == 400 and body["message"].startswith("recovery-window:")
        assert await audit(http, base, did) == before

        async with http.post(f"{base}/{did}", data=b"{not json") as resp:
            assert resp.status == 400 and "not JSON" in (await resp.json())["message"]
        async with http.post(f"{base}/{did}", data=b" " * 40_000) as resp:
            assert resp.status == 400
        assert await audit(http, base, did) == before


async def test_recovery_within_window(http: aiohttp.ClientSession, fake_clock: FakeClock) -> None:
    async with serve(create_app(clock=fake_clock)) as base:
        did, op = genesis([A, B], A)
        await post(http, f"{base}/{did}", op)
        head = operation_cid(op)
        fake_clock.advance(10)
        await post(http, f"{base}/{did}", update(head, B, [B], handle="evil.example.com"))
        fake_clock.advance(72 * HOUR_MS)
        status, body = await post(http, f"{base}/{did}", update(head, A, [A, B], handle="good.example.com"))
        assert status == 200, body
        log = await audit(http, base, did)
        assert [e["nullified"] for e in log] == [False, True, False]
        assert verify_audit_log(log).state is not None
        status, doc = await get(http, f"{base}/{did}")
        assert doc["alsoKnownAs"] == ["at://good.example.com"]


async def test_tombstone_and_unknown(http: aiohttp.ClientSession) -> None:
    async with serve(create_app()) as base:
        did, op = genesis([A], A)
        await post(http, f"{base}/{did}", op)
        tomb = build_tombstone(A, operation_cid(op))
        assert (await post(http, f"{base}/{did}", tomb))[0] == 200
        status, body = await get(http, f"{base}/{did}")
        assert status == 404 and "not available" in body["message"]
        assert (await get(http, f"{base}/{did}/data"))[0] == 404
        assert await get(http, f"{base}/{did}/log/last") == (200, tomb)
        status, body = await post(http, f"{base}/{did}", update(operation_cid(tomb), A, [A]))
        assert status == 400 and body["message"].startswith("tombstone:")
        other = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
        for path in ("", "/data", "/log", "/log/audit", "/log/last"):
            assert (await get(http, f"{base}/{other}{path}"))[0] == 404
        status, body = await get(http, f"{base}/did:plc:NOPE")
        assert status == 400 and "did:plc" in body["message"]
        # A genesis posted under the wrong DID is refused.
        _, op2 = genesis([B], B)
        status, body = await post(http, f"{base}/{other}", op2)
        assert status == 400 and body["message"].startswith("genesis:")


async def test_rate_limit(http: aiohttp.ClientSession, fake_clock: FakeClock) -> None:
    settings = StoreSettings(rate_limits=((HOUR_MS, 3),))
    async with serve(create_app(settings=settings, clock=fake_clock)) as base:
        did, op = genesis([A], A)
        await post(http, f"{base}/{did}", op)
        head = operation_cid(op)
        for i in range(2):
            nxt = update(head, A, [A], handle=f"h{i}.example.com")
            assert (await post(http, f"{base}/{did}", nxt))[0] == 200
            head = operation_cid(nxt)
        before = await audit(http, base, did)
        status, body = await post(http, f"{base}/{did}", update(head, A, [A], handle="late.example.com"))
        assert status == 400 and body["message"].startswith("rate-limit:")
        assert await audit(http, base, did) == before
        fake_clock.advance(HOUR_MS)
        assert (await post(http, f"{base}/{did}", update(head, A, [A], handle="late.example.com")))[0] == 200


async def test_export_and_persistence(
    http: aiohttp.ClientSession, tmp_path: Path, fake_clock: FakeClock
) -> None:
    dids = []
    async with serve(create_app(tmp_path, clock=fake_clock)) as base:
        for key in (A, B, C):
            did, op = genesis([key], key)
            assert (await post(http, f"{base}/{did}", op))[0] == 200
            dids.append(did)
    fake_clock.advance(-10_000)  # a clock that jumps back must not reorder the log
    async with serve(create_app(tmp_path, clock=fake_clock)) as base:
        last = (await audit(http, base, dids[0]))[-1]
        nxt = update(last["cid"], A, [A], handle="later.example.com")
        assert (await post(http, f"{base}/{dids[0]}", nxt))[0] == 200
        async with http.get(f"{base}/export", params={"after": "0", "count": "1000"}) as resp:
            lines = [json.loads(line) for line in (await resp.text()).splitlines()]
        assert [line["seq"] for line in lines] == [1, 2, 3, 4]
        assert all(line["type"] == "sequenced_op" for line in lines)
        stamps = [line["createdAt"] for line in lines]
        assert stamps == sorted(stamps) and len(set(stamps)) == 4
        async with http.get(f"{base}/export", params={"after": "2", "count": "1"}) as resp:
            (line,) = [json.loads(x) for x in (await resp.text()).splitlines()]
        assert line["seq"] == 3
        async with http.get(f"{base}/export", params={"after": stamps[1]}) as resp:
            legacy = [json.loads(x) for x in (await resp.text()).splitlines()]
        assert [x["createdAt"] for x in legacy] == stamps[2:]
        assert "nullified" in legacy[0] and "seq" not in legacy[0]
        async with http.get(f"{base}/export") as resp:
            assert len((await resp.text()).splitlines()) == 4
        for bad in ({"count": "x"}, {"count": "0"}, {"after": "yesterday"}):
            async with http.get(f"{base}/export", params=bad) as resp:
                assert resp.status == 400
