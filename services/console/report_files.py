"""A period's report as CSV (streamed) or Excel (openpyxl's write-only mode, spooled to a file).

openpyxl's write-only workbook keeps appended rows in temporary files, not in memory; the page's
rows are appended in a worker thread so the event loop keeps serving while a large sheet is built.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import IO, Any, Literal

import trio
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from services.console.report import DEVICE_COLUMNS, SUMMARY_COLUMNS, Report, device_lines, summary_lines
from shared.db import Database
from shared.i18n import N_

Format = Literal["csv", "xlsx"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
SUMMARY_SHEET = N_("Summary")
DEVICES_SHEET = N_("Device detail")
CHUNK = 64 * 1024
_WIDTHS = (16, 15, 14, 22, 8, 12, 26, 40, 40, 30, 12, 20, 30, 20, 20, 8)


def file_name(period: str, fmt: Format) -> str:
    return f"clearcard-{period}.{fmt}"


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([[v.isoformat() if isinstance(v, date) else v for v in row] for row in rows])
    return buffer.getvalue()


async def csv_chunks(db: Database, report: Report) -> AsyncIterator[bytes]:
    """The devices' rows as CSV, a page at a time (UTF-8 with a BOM, so Excel reads the Chinese)."""
    yield ("\ufeff" + _csv_text([report.headers(DEVICE_COLUMNS)])).encode()
    async for page in device_lines(db, report):
        yield _csv_text(page).encode()


def _header(sheet: WriteOnlyWorksheet, titles: list[str]) -> None:
    cells = []
    for title in titles:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = Font(bold=True)
        cells.append(cell)
    sheet.append(cells)


def _dated(sheet: WriteOnlyWorksheet, row: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in row:
        if isinstance(value, date):
            cell = WriteOnlyCell(sheet, value=value)
            cell.number_format = "yyyy-mm-dd"
            out.append(cell)
        else:
            out.append(value)
    return out


def _append(sheet: WriteOnlyWorksheet, rows: list[list[Any]]) -> None:
    for row in rows:
        sheet.append(_dated(sheet, row))


async def write_xlsx(db: Database, report: Report, target: IO[bytes] | Path) -> None:
    """The report as an Excel workbook: a summary sheet per branch, then every device."""
    book = Workbook(write_only=True)
    summary = book.create_sheet(report.words(SUMMARY_SHEET))
    summary.freeze_panes = "B2"
    for n, width in enumerate((16, 8, 8, 8, 8, 8, 14, 8, 60)):
        summary.column_dimensions[chr(ord("A") + n)].width = width
    _header(summary, report.headers(SUMMARY_COLUMNS))
    await trio.to_thread.run_sync(_append, summary, await summary_lines(db, report))
    devices = book.create_sheet(report.words(DEVICES_SHEET))
    devices.freeze_panes = "C2"
    for n, width in enumerate(_WIDTHS):
        devices.column_dimensions[chr(ord("A") + n)].width = width
    _header(devices, report.headers(DEVICE_COLUMNS))
    async for page in device_lines(db, report):
        await trio.to_thread.run_sync(_append, devices, page)
    await trio.to_thread.run_sync(book.save, target)


async def xlsx_chunks(db: Database, report: Report) -> AsyncIterator[bytes]:
    """The workbook, built in a temporary file (spilled to disk past 8 MiB), then sent in chunks."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        await write_xlsx(db, report, spool)
        spool.seek(0)
        while chunk := await trio.to_thread.run_sync(spool.read, CHUNK):
            yield chunk


def chunks(db: Database, report: Report, fmt: Format) -> AsyncIterator[bytes]:
    """The report's bytes in `fmt`."""
    return csv_chunks(db, report) if fmt == "csv" else xlsx_chunks(db, report)
