"""`clearcard clear`: submit a request and follow it, with progress, previews and confirmation."""

from __future__ import annotations

import getpass
from typing import Any

import trio
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from clearcard.follow import Followed, new_request_id, submit_and_follow
from clearcard.runtime import ALL, infrastructure, run_async, start_services
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.config import Settings
from shared.messages.clear import ClearRequest


def _local_token(settings: Settings) -> str:
    """Without --token, someone holding the signing key (an admin by definition) signs one."""
    return KeyRing(settings.keys_dir).issue(f"cli:{getpass.getuser()}", Role.ADMIN, ["*"], ttl=900)


async def _exchange(settings: Settings, request: ClearRequest, token: str, progress: Progress | None) -> Followed:
    tasks: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if progress is None:
            return
        if event["event"] == "clear.progress":
            device = event["device_id"]
            if device not in tasks:
                tasks[device] = progress.add_task(device, total=100)
            progress.update(tasks[device], completed=event["percent"],
                            description=f"{device} {event['step']}")

    async with infrastructure(settings) as (bus, db), trio.open_nursery() as nursery:
        if settings.embedded_bus:  # no broker: this process runs the whole system
            await start_services(nursery, ALL, bus, db, settings)
        followed = await submit_and_follow(bus, request, token, on_event=on_event)
        nursery.cancel_scope.cancel()
    return followed


def _plan_table(event: dict[str, Any]) -> Table:
    table = Table(title=f"preview {event['request_id']}")
    for column in ("device", "family", "action", "type", "status", "invoices", "amount", "tax"):
        table.add_column(column)
    for device in event["plan"]:
        lines = device["types"] or [{}]
        for n, line in enumerate(lines):
            table.add_row(device["device_id"] if n == 0 else "", device["family"] if n == 0 else "",
                          (device["action"] + (f" ({device['error']['code']})" if device.get("error") else ""))
                          if n == 0 else "",
                          line.get("invoice_type", ""), line.get("status", ""),
                          str(line.get("invoice_count", "")), line.get("amount", ""), line.get("tax", ""))
    return table


def run_clear(settings: Settings, out: Console, err: Console, *, branch: str, period: str,
              devices: list[str], types: list[str], mode: str, preview: bool, yes: bool,
              token: str | None, as_json: bool) -> int:
    """Returns the exit code: 0 only if every device ended cleared or already_cleared."""
    import json
    import sys

    token = token or _local_token(settings)

    def request(**extra: Any) -> ClearRequest:
        return ClearRequest.model_validate(dict(
            request_id=new_request_id(), branch_id=branch, device_ids=devices, period=period,
            invoice_types=types, mode=mode, **extra))

    try:
        first = request(preview=preview or (mode == "manual"))
    except ValidationError as exc:
        err.print(f"[red]invalid request:[/red] {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
        return 2
    if first.preview:
        followed = run_async(lambda: _exchange(settings, first, token, None))
        final = followed.final
        if final["event"] == "clear.rejected" or preview:
            if as_json:
                sys.stdout.write(json.dumps(final) + "\n")
            elif final["event"] == "clear.preview":
                out.print(_plan_table(final))
                out.print(f"confirmation: {final['confirmation']}")
            else:
                err.print(f"rejected: {final['error']['code']}: {final['error']['message']}")
            return 0 if final["event"] == "clear.preview" else 1
        if not as_json:
            out.print(_plan_table(final))
        if not yes and not _ask(err, "Write back these devices? A clear cannot be undone."):
            err.print("cancelled; nothing was written")
            return 1
        first = request(confirm=final["confirmation"])
    progress = None if as_json else Progress(TextColumn("{task.description}"), BarColumn(),
                                             TextColumn("{task.percentage:>3.0f}%"), console=err)
    if progress:
        with progress:
            followed = run_async(lambda: _exchange(settings, first, token, progress))
    else:
        followed = run_async(lambda: _exchange(settings, first, token, None))
    final = followed.final
    if as_json:
        sys.stdout.write(json.dumps(final) + "\n")
    elif final["event"] == "clear.rejected":
        err.print(f"rejected: {final['error']['code']}: {final['error']['message']}")
    else:
        for r in final["results"]:
            words = f" — {r['error']['code']}: {r['error']['message']}" if r.get("error") else ""
            out.print(f"{r['device_id']}: {r['outcome']}{words}")
        out.print(f"{final['status']} (trace {final['trace_id']})")
    return 0 if final.get("status") == "succeeded" else 1


def _ask(err: Console, question: str) -> bool:
    import typer

    return typer.confirm(question, default=False, err=True)
