"""Each service owns its tables: its SQL names only them and the views their owners publish for it.

The ownership table is docs/architecture.md's ("Who owns which table"); the tables and views are
those the migrations create. The SQL is every string literal (f-strings too) of services/*,
device_gateway/ and device_registry/ that reads like a statement.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests import architecture_doc

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "shared" / "db" / "migrations"
STATEMENT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
CREATED = re.compile(r"CREATE\s+(TABLE|(?:OR\s+REPLACE\s+)?VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)
# a bare identifier: not a column of an alias (`d.devices`), not an alias itself (`AS devices`)
IDENTIFIER = re.compile(r"(?<![.\w])(?<!AS )(?<!as )([a-z_][a-z0-9_]*)\b(?!\.)")


def created() -> tuple[set[str], set[str]]:
    """(tables, views) the migrations create."""
    tables: set[str] = set()
    views: set[str] = set()
    for path in MIGRATIONS.glob("*.sql"):
        for kind, name in CREATED.findall(path.read_text(encoding="utf-8")):
            (tables if kind.upper() == "TABLE" else views).add(name.lower())
    return tables, views


def sql_strings(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else " ? "
                           for v in node.values)
        else:
            continue
        if STATEMENT.search(text):
            yield text


def named(sql: str, relations: set[str]) -> set[str]:
    """The tables and views a statement names."""
    return {name for name in IDENTIFIER.findall(sql) if name in relations}


def part_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "services" else "gateway"


def may_name(part: str) -> set[str]:
    owned = architecture_doc.ownership()
    return ({t for t, (owner, _) in owned.items() if owner == part}
            | {f"{t}_for_{part}" for t, (_, readers) in owned.items() if part in readers})


def foreign_names() -> list[tuple[str, str]]:
    tables, views = created()
    found = []
    for folder in ("services", "device_gateway", "device_registry"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.parent == ROOT / "services":
                continue
            allowed = may_name(part_of(path))
            for sql in sql_strings(path):
                found += [(str(path.relative_to(ROOT)), n) for n in sorted(named(sql, tables | views) - allowed)]
    return sorted(set(found))


def test_no_service_names_another_services_tables() -> None:
    assert foreign_names() == []


def test_the_ownership_table_names_every_table_the_migrations_create() -> None:
    tables, _ = created()
    assert set(architecture_doc.ownership()) == tables


def test_every_published_view_is_listed_and_named_for_a_part() -> None:
    _, views = created()
    owned = architecture_doc.ownership()
    listed = {f"{t}_for_{reader}" for t, (_, readers) in owned.items() for reader in readers}
    assert views == listed
    parts = {owner for owner, _ in owned.values()}
    assert {reader for _, readers in owned.values() for reader in readers} <= parts


def test_the_scan_sees_a_foreign_table() -> None:
    """The check can fail: the console naming the coordinator's table is caught, its view is not."""
    tables, views = created()
    relations = tables | views
    sql = "SELECT r.status, count(*) AS devices FROM clear_requests r JOIN devices_for_console d USING (x)"
    assert named(sql, relations) - may_name("console") == {"clear_requests"}
    assert named("SELECT * FROM audit_log, backups", relations) - may_name("backup") == {"audit_log"}
