"""`clearcard audit search ...` and `clearcard audit anomalies`: reading the audit log as an auditor.

`register(audit_app)` adds both commands to the `clearcard audit` group.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from shared.config import Settings

app = typer.Typer(help="Search the audit log and review it for anomalies.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]
SinceOpt = Annotated[str | None, typer.Option(help="ISO 8601 time; records at or after it.")]
UntilOpt = Annotated[str | None, typer.Option(help="ISO 8601 time; records before it.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(code)


def _time(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{option} {value!r} is not an ISO 8601 time", 2) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _records(**filters: Any) -> list[dict[str, Any]]:
    from clearcard.runtime import infrastructure, run_async
    from services.audit.log import search as search_log

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise _fail(f"configuration error: {exc}", 2) from None

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await search_log(db, **filters)

    rows: list[dict[str, Any]] = run_async(main)
    return rows


@app.command("search")
def search(
    request: Annotated[str | None, typer.Option(help="Only this request id.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    branch: Annotated[str | None, typer.Option(help="Only this branch.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject (who asked).")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many records.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Records matching every filter given, oldest first (--json: one JSON list)."""
    rows = _records(request_id=request, device_id=device, branch_id=branch, subject=subject,
                    since=_time("--since", since), until=_time("--until", until), limit=limit)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, default=str) + "\n")
        return
    for r in rows:
        where = " ".join(f"{k}={r[k]}" for k in ("request_id", "device_id", "branch_id") if r.get(k))
        error = f" {r['error_code']}" if r.get("error_code") else ""
        sys.stdout.write(f"{r['seq']:>7} {r['at']} {r['subject']:<20} {r['action']:<22} "
                         f"{r.get('outcome') or '':<10}{error} {where}\n")


@app.command("anomalies")
def anomalies_command(
    since: SinceOpt = None,
    until: UntilOpt = None,
    branch: Annotated[str | None, typer.Option(help="Only this branch's records.")] = None,
    pin_failures: Annotated[int, typer.Option(min=1, help="PIN failures of one device that count.")] = 2,
    window_end_day: Annotated[int, typer.Option(min=1, max=31, help="Last day of the reporting window.")] = 15,
    burst: Annotated[int, typer.Option(min=2, help="Refusals of one subject that make a burst.")] = 5,
    burst_minutes: Annotated[int, typer.Option(min=1, help="... within this many minutes.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Anomalies for auditors: repeated PIN failures, clears outside the reporting window, manual
    clears at night (China time 22:00-06:00), bursts of rejections from one subject."""
    from services.audit.review import Rules, anomalies

    rows = _records(branch_id=branch, since=_time("--since", since), until=_time("--until", until),
                    limit=None)
    rules = Rules(pin_failures=pin_failures, window_end_day=window_end_day, burst_count=burst,
                  burst_window=timedelta(minutes=burst_minutes))
    found = [a.as_json() for a in anomalies(rows, rules)]
    if as_json:
        sys.stdout.write(json.dumps(found, ensure_ascii=False) + "\n")
        return
    if not found:
        sys.stdout.write(f"no anomalies in {len(rows)} records\n")
    for a in found:
        sys.stdout.write(f"{a['at']}  {a['kind']:<26} {a['message']}\n")


def register(audit_app: typer.Typer) -> None:
    """Add `search` and `anomalies` to the `clearcard audit` group."""
    audit_app.command("search")(search)
    audit_app.command("anomalies")(anomalies_command)
