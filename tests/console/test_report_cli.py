"""`clearcard report` as a separate process on a real database, in the language of LANG."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import trio
from openpyxl import load_workbook

from shared.db import Database
from tests.console.seed import PERIOD, branch_of, device_id, seed_month

RUN = "from clearcard.cli import main; main()"


async def _clearcard(env: dict[str, str], *args: str) -> tuple[int, bytes, str]:
    with trio.fail_after(90):
        done = await trio.run_process([sys.executable, "-c", RUN, *args], env=env, check=False,
                                      capture_stdout=True, capture_stderr=True)
    return done.returncode, done.stdout, done.stderr.decode()


def _env(database: Database, tmp_path: Path, lang: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_", "LC_", "LANG"))}
    env.update(CLEARCARD_DATABASE_URL=database.dsn, CLEARCARD_DATA_DIR=str(tmp_path / "data"), LANG=lang)
    return env


async def test_report_xlsx_in_chinese_and_csv_on_stdout_in_english(database: Database, tmp_path: Path) -> None:
    await seed_month(database, 500, 5)
    target = tmp_path / "october.xlsx"
    code, _, err = await _clearcard(_env(database, tmp_path, "zh_CN.UTF-8"), "report", "--period", PERIOD,
                                    "--output", str(target))
    assert code == 0, err
    assert "报表已写入" in err
    book = load_workbook(target, read_only=True)
    rows = list(book["设备明细"].iter_rows(values_only=True))
    assert len(rows) == 501 and {r[1] for r in rows[1:]} == {device_id(i) for i in range(500)}
    code, out, err = await _clearcard(_env(database, tmp_path, "C.UTF-8"), "report", "--period", PERIOD,
                                      "--branch", branch_of(2, 5), "--format", "csv", "--output", "-")
    assert code == 0, err
    lines = list(csv.reader(io.StringIO(out.decode("utf-8-sig"))))
    assert lines[0][0] == "Branch" and len(lines) == 101
    assert {line[5] for line in lines[1:]} == {"cleared", "failed"}  # states 2 and 7
    code, _, err = await _clearcard(_env(database, tmp_path, "C"), "report", "--period", "2026-13")
    assert code == 2 and "real month" in err
