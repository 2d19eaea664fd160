"""`clearcard report`: a period's results per branch and device as Excel (.xlsx) or CSV.

The same report the console gives (services/console/report.py), in the language of LANG.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.config import Settings

FORMATS = ("csv", "xlsx")


def report(
    period: Annotated[str, typer.Option(help="The tax period, YYYY-MM.")],
    branch: Annotated[list[str] | None, typer.Option(help="Only this branch; repeatable (default: every "
                                                          "branch).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="xlsx (a summary sheet and every device) or csv "
                                                     "(every device).")] = "xlsx",
    output: Annotated[Path | None, typer.Option(help="File to write ('-' for CSV on stdout); default "
                                                     "clearcard-PERIOD.FORMAT in this folder.")] = None,
) -> None:
    """Write a period's clears per branch and device: cleared, failed with reasons, lock dates, backups."""
    from pydantic import TypeAdapter, ValidationError

    from clearcard.lang import cli_locale, words
    from clearcard.runtime import infrastructure, run_async
    from services.console.report import Report
    from services.console.report_files import csv_chunks, file_name, write_xlsx
    from shared.messages.base import BranchId, Period

    try:
        TypeAdapter(Period).validate_python(period)
        for b in branch or []:
            TypeAdapter(BranchId).validate_python(b)
    except ValidationError:
        sys.stderr.write(f"error: --period must be a real month, YYYY-MM, and each --branch 1 to 64 of "
                         f"A-Z a-z 0-9 . _ : - (got {period!r})\n")
        raise typer.Exit(2) from None
    if fmt not in FORMATS:
        sys.stderr.write(f"error: --format must be csv or xlsx, not {fmt!r}\n")
        raise typer.Exit(2)
    if str(output) == "-" and fmt != "csv":
        sys.stderr.write("error: only CSV can go to stdout ('--output -')\n")
        raise typer.Exit(2)
    target = output or Path(file_name(period, fmt))  # type: ignore[arg-type]  # checked above
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise typer.Exit(2) from None
    wanted = Report(period=period, branches=set(branch) if branch else None, locale=cli_locale())

    async def main() -> None:
        async with infrastructure(settings) as (_, db):
            if fmt == "xlsx":
                await write_xlsx(db, wanted, target)
                return
            out = sys.stdout.buffer if str(target) == "-" else target.open("wb")
            try:
                async for chunk in csv_chunks(db, wanted):
                    out.write(chunk)
            finally:
                out.flush()
                if out is not sys.stdout.buffer:
                    out.close()

    run_async(main)
    if str(target) != "-":
        sys.stderr.write(words("Report written to {path}", path=str(target)) + "\n")


def register(app: typer.Typer) -> None:
    """Add `clearcard report` to the command."""
    app.command("report")(report)
