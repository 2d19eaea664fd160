"""`backup take | prune | repair | rotate-key` as commands, on real PostgreSQL and emulated devices."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.fleets import two_family_fleet

pytestmark = pytest.mark.postgres
ADMIN = [sys.executable, "-c", "from clearcard.commands.backup_admin import app; app()"]


async def _run(env: dict[str, str], *args: str, code: int = 0) -> Any:
    with trio.fail_after(60):
        done = await trio.run_process([*ADMIN, *args, "--json"], env=env, capture_stdout=True,
                                      capture_stderr=True, check=False)
    assert done.returncode == code, done.stderr.decode()
    return json.loads(done.stdout)


async def test_take_prune_repair_and_rotate_from_the_command_line(tmp_path: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(tmp_path / "data"), CLEARCARD_DATABASE_URL=database_url,
               CLEARCARD_FLEET=str(two_family_fleet(tmp_path / "fleet.toml")), CLEARCARD_BACKUP_KEEP="1",
               CLEARCARD_BACKUP_SCHEDULE="off")
    first = await _run(env, "take", "--request-id", "r1")
    assert {r["device_id"] for r in first["results"]} == {"661500000001", "539900000004"}
    assert all(r["backup_id"] and r["period"] == "2026-10" for r in first["results"])
    assert await _run(env, "take", "--request-id", "r1") == first  # the same round is not repeated
    second = await _run(env, "take", "--request-id", "r2", "--device", "661500000001")
    [newest] = second["results"]
    unknown = await _run(env, "take", "--device", "661500000099", code=1)
    assert unknown["results"][0]["error_code"] == "UNKNOWN_DEVICE"

    dry = await _run(env, "prune", "--dry-run")
    older = next(r["backup_id"] for r in first["results"] if r["device_id"] == "661500000001")
    assert dry == {"keep": 1, "removed": [older], "kept": 2, "leftovers": [], "dry_run": True}
    assert (await _run(env, "prune"))["removed"] == [older]

    primary = tmp_path / "data" / "backups" / "primary"
    for path in primary.rglob(f"*{newest['backup_id'][-12:]}*.ccbk"):
        path.unlink()
    assert await _run(env, "repair", newest["backup_id"]) == {"backup_id": newest["backup_id"],
                                                              "repaired": [str(primary)]}
    rotated = await _run(env, "rotate-key", "--reencrypt")
    assert len(rotated["reencrypted"]) == 2 and rotated["key_id"]
