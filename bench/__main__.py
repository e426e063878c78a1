"""Command line: ``python -m bench [--quick] [--json] [--only GROUPS] [--impl IMPLS]``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence

from bench.harness import (
    OURS,
    QUICK,
    Config,
    load_groups,
    loadavg,
    machine_info,
    render_table,
    run_groups,
)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected groups and print the table (or JSON)."""
    groups = load_groups()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    parser.add_argument(
        "--only", type=_names, help="comma-separated groups: " + ",".join(g.name for g in groups)
    )
    parser.add_argument("--impl", type=_names, help=f"comma-separated implementations (e.g. {OURS},atproto)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few, short samples")
    parser.add_argument("--reps", type=int, help="samples per row (default 7, quick 3)")
    parser.add_argument("--target", type=float, help="seconds per sample (default 0.2, quick 0.01)")
    parser.add_argument("--list", action="store_true", help="list groups and cases, then exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    if args.only:
        unknown = sorted(set(args.only) - {g.name for g in groups})
        if unknown:
            parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(g.name for g in groups)}")
        groups = [g for g in groups if g.name in args.only]

    if args.list:
        for group in groups:
            print(f"{group.name}: {group.title}")
            for case in group.build():
                peers = ", ".join(c.label for c in case.contenders)
                print(f"  {case.name}: {case.what} [{peers}]")
        return 0

    cfg = QUICK if args.quick else Config()
    if args.reps is not None:
        cfg = dataclasses.replace(cfg, reps=max(1, args.reps))
    if args.target is not None:
        cfg = dataclasses.replace(cfg, target=max(1e-4, args.target))
    if args.impl:
        cfg = dataclasses.replace(cfg, impls=frozenset(args.impl))

    info = machine_info()
    start = time.perf_counter()
    results = run_groups(groups, cfg, log=None if args.quiet else sys.stderr)
    elapsed = time.perf_counter() - start

    if args.json:
        payload = {
            "machine": info,
            "config": {
                "reps": cfg.reps,
                "target_s": cfg.target,
                "quick": cfg.quick,
                "impls": sorted(cfg.impls) if cfg.impls is not None else None,
                "groups": [g.name for g in groups],
            },
            "elapsed_s": elapsed,
            "loadavg_at_end": loadavg(),
            "results": [r.as_json() for r in results],
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print(render_table(results, info, cfg, elapsed))
    ours_failed = any(r.impl == OURS and r.status == "error" for r in results)
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
