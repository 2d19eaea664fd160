"""`clearcard calendar show`: the tax calendar in force (CLEARCARD_TAX_CALENDAR) and its deadlines."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

app = typer.Typer(help="The tax calendar: filing deadlines, which are the devices' lock dates.",
                  no_args_is_help=True)


@app.command("show")
def show(
    year: Annotated[int | None, typer.Option(help="Deadlines falling due in this year (default: this year).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Each period's deadline and reporting window; periods the calendar does not list fall due on the 15th."""
    from shared.config import Settings
    from shared.tax_calendar import CalendarError, shipped, today_in_china, window_start

    try:
        calendar = Settings.from_env().calendar
    except (CalendarError, ValueError) as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise typer.Exit(2) from None
    year = year or today_in_china().year
    periods = [f"{year - 1}-12"] + [f"{year}-{m:02d}" for m in range(1, 12)]  # due in January .. December
    rows = [{"period": p, "window_start": window_start(p).isoformat(), "deadline": calendar.deadline(p).isoformat(),
             "listed": p in calendar.deadlines,
             "moved": calendar.deadline(p) != window_start(p).replace(day=15)} for p in periods]
    document = {"name": calendar.name, "source": calendar.source, "shipped": shipped(), "year": year,
                "deadlines": rows}
    if as_json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
        return
    sys.stdout.write(f"calendar: {calendar.name}" + (f" — {calendar.source}" if calendar.source else "") + "\n")
    for r in rows:
        note = "moved" if r["moved"] else ("" if r["listed"] else "the 15th (not listed)")
        sys.stdout.write(f"{r['period']}  {r['window_start']} .. {r['deadline']}  {note}\n")
