"""Packaging: every import in src/ is either the standard library, atrepo, or a base dependency.

A plain ``pip install atrepo`` (no extras) must give a working command; a
module that imports a dev-only package breaks it at start-up.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "atrepo"
#: Import name of each distribution, where the two differ.
IMPORT_NAME = {"dnslib": "dnslib", "cryptography": "cryptography", "pyjwt": "jwt"}


def _base_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for spec in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9_.\-]+", spec)
        assert match is not None
        dist = match.group(0).lower().replace("-", "_")
        names.add(IMPORT_NAME.get(dist, dist))
    return names


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_runtime_imports_come_from_base_dependencies() -> None:
    allowed = _base_dependencies() | set(sys.stdlib_module_names) | {"atrepo"}
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        extra = _imported_top_levels(path) - allowed
        if extra:
            bad[str(path.relative_to(ROOT))] = sorted(extra)
    assert bad == {}, f"imports outside the base dependencies: {bad}"


def test_dev_tools_are_not_base_dependencies() -> None:
    base = _base_dependencies()
    assert not base & {"pytest", "hypothesis", "mypy", "ruff"}
    assert "dnslib" in base  # identity/dns.py imports it at start-up
