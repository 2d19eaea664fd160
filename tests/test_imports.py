"""Who may import whom: authorization is decided in shared/authz, never borrowed from a service.

Walks the import statements of every module (the AST, so imports inside functions count too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests import architecture_doc

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
    assert "services.audit.service" in set(imports(ROOT / "clearcard" / "commands" / "audit.py"))  # lazy, in a command


# --- the import rules of docs/architecture.md, for every part ----------------------------------------

def part_of(path: Path) -> tuple[str, str]:
    """(the importer row of docs/architecture.md that governs `path`, its own service if any)."""
    parts = path.relative_to(ROOT).parts
    if parts[0] == "services":
        return "services.<X>", parts[1] if len(parts) > 2 else ""
    return parts[0], ""


def allowed(rule: set[str], own_service: str, name: str) -> bool:
    top = name.split(".")[0]
    if top == "services":
        if name == "services":
            return "services" in rule or "services.<X>" in rule
        service = name.split(".")[1]
        return "services" in rule or ("services.<X>" in rule and service == own_service)
    return top in rule or top not in FIRST_PARTY


FIRST_PARTY = {"services", "shared", "device_gateway", "device_registry", "clearcard", "infra", "benchmarks"}


def violations(folders: tuple[str, ...]) -> list[tuple[str, str]]:
    rules = architecture_doc.import_rules()
    exceptions = architecture_doc.import_exceptions()
    found = []
    for folder in folders:
        for path in modules(folder):
            importer, own = part_of(path)
            rel = str(path.relative_to(ROOT))
            for name in imports(path):
                if allowed(rules[importer], own, name):
                    continue
                if any(rel == module and (name == pkg or name.startswith(pkg + ".")) for module, pkg in exceptions):
                    continue
                found.append((rel, name))
    return found


def test_every_part_imports_only_what_docs_architecture_allows() -> None:
    """No service imports another; shared/, device_gateway/ and device_registry/ never import a service."""
    assert violations(("services", "shared", "device_gateway", "device_registry", "clearcard")) == []


def test_no_service_imports_another_service() -> None:
    crossing = [(str(p.relative_to(ROOT)), name) for p in modules("services") for name in imports(p)
                if name.startswith("services.") and name.split(".")[1] != service_of(p)
                and len(p.relative_to(ROOT / "services").parts) > 1]
    assert crossing == []


def test_the_rules_catch_a_crossing() -> None:
    """The checks above can fail: a service importing another, shared or the gateway importing one."""
    rules = architecture_doc.import_rules()
    assert not allowed(rules["services.<X>"], "console", "services.audit.service")
    assert allowed(rules["services.<X>"], "console", "services.console.fleet")
    assert not allowed(rules["shared"], "", "services.audit")
    assert not allowed(rules["device_gateway"], "", "services.coordinator.steps")
    assert not allowed(rules["device_registry"], "", "device_gateway.service")
    assert allowed(rules["clearcard"], "", "services.audit.log")


def test_the_known_exceptions_are_still_needed() -> None:
    """An exception the code no longer needs is struck from docs/architecture.md."""
    for module, package in architecture_doc.import_exceptions():
        names = set(imports(ROOT / module))
        assert any(n == package or n.startswith(package + ".") for n in names), (module, package)
