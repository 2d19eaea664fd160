"""`clearcard device ...`: the device registry (contract §2): import, list, export, retire, set-pin.

The commands call the registry in this process (device_registry/) and act as `local:<os user>`:
whoever holds this host's database URL and keys. Every change is audited: through the audit
service when a broker is configured, straight into the audit chain otherwise.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from shared.config import Settings

T = TypeVar("T")

app = typer.Typer(help="The device registry: which devices the product drives, for whom, with which PIN.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]
BranchOpt = Annotated[str | None, typer.Option(help="Only this branch.")]


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


@dataclass(frozen=True)
class _ChainAudit:
    """Appends to the audit chain itself: a CLI on the embedded bus has no audit service to ask."""

    db: Any
    batch: int = 1000

    async def __call__(self, entries: list[Any]) -> None:
        from device_registry.registry import SERVICE
        from services.audit import store
        from shared import telemetry
        from shared.messages.audit import AuditRecord

        trace_id = telemetry.current_trace_id()
        for start in range(0, len(entries), self.batch):
            await self.db.run(store.append_records, [AuditRecord(
                record_id=uuid.uuid4().hex, service=SERVICE, subject=e.subject, action=e.action,
                outcome=e.outcome, device_id=e.device_id, branch_id=e.branch_id, error_code=e.error_code,
                trace_id=trace_id, detail=e.detail) for e in entries[start:start + self.batch]])


def _run(work: Callable[[Any, Any, str], Awaitable[T]], *, as_json: bool = False) -> T:
    """Run `work(registry, db, actor)`; a ClearCardError ends the command (exit 1) in plain words.

    With `as_json` the refusal is also the command's JSON document on stdout.
    """
    from clearcard.runtime import identified, infrastructure, run_async
    from device_registry import BusAudit, ImportRefused, PinVault, Registry
    from shared.bus.api import BusError
    from shared.bus.topology import AUDIT, topology_for
    from shared.errors import ClearCardError

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        _err(f"configuration error: {exc}")
        raise typer.Exit(2) from None

    async def main() -> T | ClearCardError:
        # errors are returned, not raised: trio-asyncio's loop would wrap them in an ExceptionGroup
        try:
            async with infrastructure(settings) as (bus, db):
                if settings.embedded_bus:
                    sink: Any = _ChainAudit(db)
                else:
                    # the command line's own broker account may not declare it: the definitions hold it
                    with contextlib.suppress(BusError):
                        await bus.declare(topology_for(AUDIT))
                    # signed as the command line (shared/bus/senders.py), or the audit service
                    # dead-letters them; the records say `registry` in their body
                    sink = BusAudit(identified(bus, "cli", settings))
                registry = Registry(db, PinVault.open(settings.keys_dir), sink)
                return await work(registry, db, f"local:{getpass.getuser()}")
        except ClearCardError as exc:
            return exc

    result = run_async(main)
    if isinstance(result, ClearCardError) and as_json:
        document: dict[str, Any] = {"error": {"code": result.code.value, "message": result.message}}
        if isinstance(result, ImportRefused):
            document |= {"bad_rows": result.total,
                         "errors": [{"line": e.line, "message": e.message} for e in result.errors]}
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    if isinstance(result, ImportRefused):
        _err(f"error: {result.code}: {result.total} bad row(s); nothing was imported")
        for error in result.errors:
            _err(f"  {error}")
        if result.total > len(result.errors):
            _err(f"  ... and {result.total - len(result.errors)} more bad row(s)")
        raise typer.Exit(1)
    if isinstance(result, ClearCardError):
        _err(f"error: {result.code}: {result.message}")
        raise typer.Exit(1)
    return result


@app.command("import")
def import_file(file: Annotated[Path, typer.Argument(help="CSV: device_id,family,taxpayer_id,branch,machine_no")],
                as_json: JsonOpt = False) -> None:
    """Enrol the devices of a CSV file: all rows or none; every bad row is named by its line."""
    try:
        handle = file.open(encoding="utf-8", newline="")
    except OSError as exc:
        _err(f"error: cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from None

    def lines() -> Iterator[str]:
        from shared.errors import ClearCardError, ErrorCode

        try:
            yield from handle
        except UnicodeDecodeError as exc:
            raise ClearCardError(ErrorCode.INVALID_REQUEST, f"{file} is not UTF-8 text ({exc.reason}); "
                                 "save it as CSV UTF-8; nothing was imported") from None

    async def work(registry: Any, db: Any, actor: str) -> Any:
        return await registry.import_file(lines(), actor=actor, source="import", name=file.name)

    try:
        counts = _run(work, as_json=as_json)
    finally:
        handle.close()
    if as_json:
        sys.stdout.write(json.dumps(counts.__dict__) + "\n")
    else:
        _err(f"{counts.enrolled} enrolled, {counts.updated} updated, {counts.reinstated} back in service, "
             f"{counts.unchanged} unchanged")


@app.command("list")
def list_devices(branch: BranchOpt = None, as_json: JsonOpt = False) -> None:
    """Enrolled devices (retired ones marked) and hardware a gateway sees that is not enrolled."""
    from device_registry.directory import PAGE, list_page

    async def work(registry: Any, db: Any, actor: str) -> int:
        after, count = "", 0
        if as_json:
            sys.stdout.write("[")
        while True:  # page by page: a fleet is never held whole
            page = await db.run(list_page, after, [branch] if branch else None)
            for row in page:
                if as_json:
                    sys.stdout.write(("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False))
                else:
                    state = "retired" if row["retired"] else "in service" if row["enrolled"] else "NOT ENROLLED"
                    sys.stdout.write(f"{row['device_id']}  {row['family'] or '-':16}  {row['branch_id'] or '-':20}  "
                                     f"{row['taxpayer_id'] or '-':18}  {row['gateway_id'] or '-':12}  "
                                     f"{'online' if row['online'] else 'offline':7}  {state}\n")
                count += 1
            if len(page) < PAGE:
                break
            after = page[-1]["device_id"]
        if as_json:
            sys.stdout.write("\n]\n")
        return count

    _run(work, as_json=as_json)


@app.command("export")
def export(branch: BranchOpt = None) -> None:
    """The enrolled devices in service as CSV with the import's header (never a PIN)."""
    from device_registry.directory import PAGE, export_page
    from device_registry.enrolment import HEADER, to_csv_line

    async def work(registry: Any, db: Any, actor: str) -> None:
        sys.stdout.write(",".join(HEADER) + "\r\n")
        after = ""
        while True:
            page = await db.run(export_page, after, [branch] if branch else None)
            sys.stdout.writelines(to_csv_line(e) for e in page)
            if len(page) < PAGE:
                return
            after = page[-1].device_id

    _run(work)


@app.command("retire")
def retire(device: str) -> None:
    """Take a device out of service: requests naming it are refused, its history and backups stay."""

    async def work(registry: Any, db: Any, actor: str) -> bool:
        changed: bool = await registry.retire(device, actor=actor)
        return changed

    _err(f"{device} retired" if _run(work) else f"{device} was already retired")


@app.command("set-pin")
def set_pin(device: str, pin_stdin: Annotated[bool, typer.Option(
        "--pin-stdin", help="Read the PIN from the first line of standard input.")] = False) -> None:
    """Record a device's certificate PIN (stored encrypted); a corrected PIN is tried again."""
    if pin_stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    else:
        pin = typer.prompt("Certificate PIN", hide_input=True, confirmation_prompt=True, err=True)

    async def work(registry: Any, db: Any, actor: str) -> int:
        revision: int = await registry.set_pin(device, pin, actor=actor)
        return revision

    _run(work)
    _err(f"PIN on record for {device} updated (it will be tried at the next clear)")
