"""Identity benchmarks: cached DID lookups/s and did:plc operations validated/s.

Run: ``.venv-bench/bin/python -m bench.bench_identity [--rounds N] [--dids N] [--json]``.

Everything is local: our PLC directory is started in-process on 127.0.0.1 and
filled with fresh DIDs; every resolver (ours and the peers) reads from it.
Each figure is the median over ``--rounds`` samples, with the contenders of a
row timed in turn within each round (so slow drifts in load hit all of them);
``x`` is the median of atrepo's rate over the peer's rate in the same round.

Peers: the ``atproto`` SDK's ``atproto_identity`` async resolver with its
in-memory cache (lookups), and ``arroba`` (operations). arroba has no audit-log
validator, so its row is a linear chain check assembled from arroba's own
primitives (``did.decode_did_key``, ``util.verify_sig``, ``util.dag_cbor_cid``):
prev link, signature by a previous rotation key, CID; no nullification rules.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from atrepo.core.keys import PrivateKey
from atrepo.identity.plc.operations import (
    LogEntry,
    Service,
    build_operation,
    genesis_did,
    operation_cid,
    verify_audit_log,
)
from atrepo.identity.plc.server import create_app
from atrepo.identity.resolver import DIDResolver

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "interop-plc" / "audit_log" / "valid"
PDS = Service("AtprotoPersonalDataServer", "https://pds.example.com")

Sample = Callable[[], Awaitable[tuple[int, float]]]


def _chain(curve: str, length: int) -> list[dict[str, Any]]:
    """A linear audit log of ``length`` ops, each signed by the previous rotation key."""
    keys = [PrivateKey.generate(curve) for _ in range(3)]  # type: ignore[arg-type]
    rotation = [k.public_key.did_key() for k in keys]
    ops = []
    prev = None
    for i in range(length):
        op = build_operation(
            keys[i % 3],
            rotation_keys=rotation,
            verification_methods={"atproto": keys[0].public_key.did_key()},
            also_known_as=[f"at://user{i}.example.com"],
            services={"atproto_pds": PDS},
            prev=prev,
        )
        ops.append(op)
        prev = operation_cid(op)
    did = genesis_did(ops[0])
    return [
        LogEntry(did, op, operation_cid(op), False, 1_700_000_000_000 + i).to_json()
        for i, op in enumerate(ops)
    ]


def _arroba_validator() -> Callable[[list[dict[str, Any]]], int] | str:
    try:
        from arroba import did as arroba_did
        from arroba import util as arroba_util
    except ImportError:
        return "not installed"

    def validate(log: list[dict[str, Any]]) -> int:
        rotation: list[Any] = []
        prev_cid = None
        for entry in log:
            op = dict(entry["operation"])
            if op.get("prev") != prev_cid:
                raise ValueError("prev mismatch")
            text = op["sig"]
            op["sig"] = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            keys = rotation or [arroba_did.decode_did_key(k) for k in op["rotationKeys"]]
            if not any(arroba_util.verify_sig(op, key) for key in keys):
                raise ValueError("bad signature")
            cid = arroba_util.dag_cbor_cid(entry["operation"]).encode("base32")
            if cid != entry["cid"]:
                raise ValueError("cid mismatch")
            prev_cid = cid
            rotation = [arroba_did.decode_did_key(k) for k in op["rotationKeys"]]
        return len(log)

    return validate


async def _median_rows(rows: dict[str, Sample], rounds: int) -> dict[str, dict[str, float]]:
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds):
        order = list(rows)
        order = order[r % len(order) :] + order[: r % len(order)]
        for name in order:
            gc.collect()
            gc.disable()
            try:
                count, seconds = await rows[name]()
            finally:
                gc.enable()
            rates[name].append(count / seconds)
    ours = next(iter(rows))
    out = {}
    for name, values in rates.items():
        ratio = statistics.median(a / b for a, b in zip(rates[ours], values, strict=True))
        out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values), "x": ratio}
    return out


async def _lookups(
    base: str, dids: list[str], rounds: int, notes: dict[str, str]
) -> dict[str, dict[str, float]]:
    rows: dict[str, Sample] = {}
    ours = DIDResolver(plc_url=base, timeout=10)
    for did in dids:
        await ours.resolve(did)

    async def ours_sample() -> tuple[int, float]:
        resolve = ours.resolve
        start = time.perf_counter()
        for _ in range(20):
            for did in dids:
                (await resolve(did)).signing_key  # noqa: B018 - the key a verifier needs
        return 20 * len(dids), time.perf_counter() - start

    rows["atrepo DIDResolver"] = ours_sample
    peer: Any = None
    try:
        from atproto_identity.cache.in_memory_cache import AsyncDidInMemoryCache
        from atproto_identity.resolver import AsyncIdResolver
    except ImportError:
        notes["atproto_identity (AsyncIdResolver + AsyncDidInMemoryCache)"] = "not installed"
    else:
        peer = AsyncIdResolver(plc_url=base, timeout=10, cache=AsyncDidInMemoryCache())
        for did in dids:
            await peer.did.resolve_atproto_key(did)

        async def peer_sample() -> tuple[int, float]:
            resolve_key = peer.did.resolve_atproto_key
            start = time.perf_counter()
            for _ in range(20):
                for did in dids:
                    await resolve_key(did)
            return 20 * len(dids), time.perf_counter() - start

        rows["atproto_identity (AsyncIdResolver + AsyncDidInMemoryCache)"] = peer_sample
    try:
        return await _median_rows(rows, rounds)
    finally:
        await ours.close()


async def _uncached(base: str, dids: list[str], rounds: int) -> dict[str, dict[str, float]]:
    rows: dict[str, Sample] = {}
    ours = DIDResolver(plc_url=base, timeout=10)
    sample_dids = dids[:100]

    async def ours_sample() -> tuple[int, float]:
        start = time.perf_counter()
        await asyncio.gather(*(ours.resolve(did, force_refresh=True) for did in sample_dids))
        return len(sample_dids), time.perf_counter() - start

    rows["atrepo DIDResolver (force_refresh)"] = ours_sample
    peer: Any = None
    try:
        from atproto_identity.resolver import AsyncIdResolver
    except ImportError:
        pass
    else:
        peer = AsyncIdResolver(plc_url=base, timeout=10)

        async def peer_sample() -> tuple[int, float]:
            start = time.perf_counter()
            await asyncio.gather(*(peer.did.resolve(did, force_refresh=True) for did in sample_dids))
            return len(sample_dids), time.perf_counter() - start

        rows["atproto_identity (no cache)"] = peer_sample
    try:
        return await _median_rows(rows, rounds)
    finally:
        await ours.close()


async def _operations(rounds: int, notes: dict[str, str]) -> dict[str, dict[str, float]]:
    fixture_logs = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    chain_k256 = _chain("k256", 40)
    chain_p256 = _chain("p256", 40)
    for log in (*fixture_logs, chain_k256, chain_p256):
        verify_audit_log(log)
    rows: dict[str, Sample] = {}

    def timed(fn: Callable[[list[dict[str, Any]]], object], logs: list[list[dict[str, Any]]]) -> Sample:
        ops = sum(len(log) for log in logs)

        async def sample() -> tuple[int, float]:
            start = time.perf_counter()
            for _ in range(5):
                for log in logs:
                    fn(log)
            return 5 * ops, time.perf_counter() - start

        return sample

    rows["atrepo verify_audit_log (k256 chain)"] = timed(verify_audit_log, [chain_k256])
    rows["atrepo verify_audit_log (p256 chain)"] = timed(verify_audit_log, [chain_p256])
    rows["atrepo verify_audit_log (10 fixture logs)"] = timed(verify_audit_log, fixture_logs)
    arroba = _arroba_validator()
    if isinstance(arroba, str):
        notes["arroba primitives (k256 chain)"] = arroba
    else:
        arroba(chain_k256)
        rows["arroba primitives (k256 chain)"] = timed(arroba, [chain_k256])
    return await _median_rows(rows, rounds)


async def _populate(base: str, count: int) -> list[str]:
    import aiohttp

    dids = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            key = PrivateKey.generate("k256")
            op = build_operation(
                key,
                rotation_keys=[key.public_key.did_key()],
                verification_methods={"atproto": key.public_key.did_key()},
                also_known_as=["at://bench.example.com"],
                services={"atproto_pds": PDS},
                prev=None,
            )
            did = genesis_did(op)
            async with session.post(f"{base}/{did}", json=op) as resp:
                resp.raise_for_status()
            dids.append(did)
    return dids


def _print_section(title: str, unit: str, rows: dict[str, dict[str, float]], notes: dict[str, str]) -> None:
    print(f"\n{title}")
    print(f"  {'implementation':<62} {unit:>12} {'spread':>21} {'atrepo x':>9}")
    for index, (name, row) in enumerate(rows.items()):
        spread = f"{row['min']:,.0f}-{row['max']:,.0f}"
        ratio = f"{row['x']:.2f}" if index == 0 or not name.startswith("atrepo") else ""
        print(f"  {name:<62} {row['median']:>12,.0f} {spread:>21} {ratio:>9}")
    for name, note in notes.items():
        print(f"  {name:<62} {note:>12}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        dids = await _populate(base, args.dids)
        lookup_notes: dict[str, str] = {}
        op_notes: dict[str, str] = {}
        lookups = await _lookups(base, dids, args.rounds, lookup_notes)
        uncached = await _uncached(base, dids, args.rounds)
        operations = await _operations(args.rounds, op_notes)
    finally:
        await runner.cleanup()
    if not args.json:
        print(f"identity benchmarks: Python {sys.version.split()[0]}, {args.rounds} rounds, {args.dids} DIDs")
        _print_section(
            "cached DID resolution (signing key of a cached DID)", "lookups/s", lookups, lookup_notes
        )
        _print_section(
            "uncached DID resolution over loopback HTTP (our directory)", "lookups/s", uncached, {}
        )
        _print_section("did:plc audit-log validation", "ops/s", operations, op_notes)
    return {
        "cached_lookups": lookups,
        "uncached_lookups": uncached,
        "operations": operations,
        "notes": {**lookup_notes, **op_notes},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_identity", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=7, help="samples per row (median reported)")
    parser.add_argument("--dids", type=int, default=200, help="DIDs created in the local directory")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
