"""docs/architecture.md read as data: the import rules and the table ownership the tests enforce."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def tables_under(heading: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in the section `## heading`, as rows keyed by the header cells."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {heading}") + 1
    section = []
    for line in lines[start:]:
        if line.startswith("## "):
            break
        section.append(line)
    found: list[list[dict[str, str]]] = []
    rows: list[list[str]] = []
    for line in [*section, ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            header, body = rows[0], rows[2:]  # rows[1] is the |---| line
            found.append([dict(zip(header, row, strict=True)) for row in body])
            rows = []
    return found


def cells(value: str) -> list[str]:
    """`a, b` (backquotes dropped) as its items."""
    return [item.strip().strip("`") for item in value.split(",") if item.strip()]


def import_rules() -> dict[str, set[str]]:
    """importer -> the top-level parts it may import (`services.<X>` for any one service)."""
    return {row["importer"]: set(cells(row["may import"])) for row in tables_under("Who may import whom")[0]}


def import_exceptions() -> set[tuple[str, str]]:
    """(module path, imported package) pairs the doc lists as known exceptions."""
    return {(row["module"], row["imports"]) for row in tables_under("Who may import whom")[1]}


def ownership() -> dict[str, tuple[str, list[str]]]:
    """table -> (owner part, readers that have a `<table>_for_<reader>` view)."""
    rows = tables_under("Who owns which table")[0]
    return {row["table"]: (row["owner"], cells(row["readers (through `<table>_for_<reader>`)"])) for row in rows}
