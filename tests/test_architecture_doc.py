"""docs/architecture.md names every part and every queue the code has, and nothing else."""

from __future__ import annotations

from shared.bus import topology
from tests import architecture_doc
from tests.architecture_doc import ROOT, cells, tables_under


def test_the_parts_are_the_folders() -> None:
    parts = tables_under("Parts")[0]
    folders = {folder.rstrip("/") for row in parts for folder in cells(row["folder"])}
    services = {f"services/{p.name}" for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
    assert services <= folders
    assert all((ROOT / folder).is_dir() for folder in folders)
    # the owners and readers of tables are parts of the house
    names = {row["part"] for row in parts}
    owned = architecture_doc.ownership()
    assert {owner for owner, _ in owned.values()} | {r for _, readers in owned.values() for r in readers} <= names


def test_the_operations_go_to_queues_that_exist() -> None:
    queues = {q.name for q in topology.WORK_QUEUES} | {topology.gateway_queue("<id>").name}
    listed = {row["queue"] for row in tables_under("Asking the owner over the bus")[0]}
    assert listed <= queues, listed - queues
