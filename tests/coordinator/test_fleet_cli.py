"""`clearcard fleet clear` across branches, as an operator runs it (embedded bus, real PostgreSQL)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from tests.support.fleets import CLOCK, device


async def test_fleet_clear_across_two_branches(tmp_path: Path, database_url: str) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'clock = "{CLOCK}"\n\n'
        + device("661500000011", "ukey", "91420100MA4K0001XK", ["004"], branch="wuhan-a") + "\n"
        + device("661500000012", "golden_tax_disk", "91420100MA4K0002XL", ["007"], branch="wuhan-b"),
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(tmp_path / "data"), CLEARCARD_FLEET=str(fleet),
               CLEARCARD_DATABASE_URL=database_url)
    with trio.fail_after(90):
        done = await trio.run_process(
            [".venv/bin/clearcard", "fleet", "clear", "--branch", "*", "--period", "2026-10", "--json"],
            env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout)
    assert result["answer"]["event"] == "fleet.accepted" and result["answer"]["devices"] == 2
    assert len(result["answer"]["requests"]) == 2
    assert {e["status"] for e in result["finished"]} == {"succeeded"}
