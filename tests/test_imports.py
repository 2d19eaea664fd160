"""Who may import whom: authorization is decided in shared/authz, never borrowed from a service.

Walks the import statements of every module (the AST, so imports inside functions count too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def service_of(path: Path) -> str:
    return path.relative_to(ROOT / "services").parts[0]


def test_no_service_imports_another_service_for_authorization() -> None:
    borrowed = [(str(p.relative_to(ROOT)), name) for p in modules("services") if service_of(p) != "auth"
                for name in imports(p) if name == "services.auth" or name.startswith("services.auth.")]
    assert borrowed == [], "authorization comes from shared.authz, not services.auth"


def test_shared_and_the_gateway_never_import_services() -> None:
    found = [(str(p.relative_to(ROOT)), name) for folder in ("shared", "device_gateway") for p in modules(folder)
             for name in imports(p) if name == "services" or name.startswith("services.")]
    assert found == []


def test_authorization_is_not_decided_outside_shared_authz() -> None:
    """The roles table is read through shared.authz's decision, not consulted on the side."""
    direct = [(str(p.relative_to(ROOT)), name) for folder in ("services", "clearcard", "device_gateway")
              for p in modules(folder) for name in imports(p)
              if name in ("shared.authz.roles.ALLOWED", "shared.authz.roles.NEEDS_SECOND_FACTOR")]
    assert direct == []


def test_the_walk_sees_imports_inside_functions() -> None:
    sample = ROOT / "services" / "console" / "security.py"
    assert "shared.authz" in set(imports(sample))
    assert "services.audit.service" in set(imports(ROOT / "clearcard" / "cli.py"))  # a lazy import in a command
