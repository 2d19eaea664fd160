"""The device registry over HTTP, for administrators: what `clearcard device ...` does.

Every route goes through device_registry's `Registry` (its one writer) and is audited through
the audit service. A branch-scoped administrator sees and changes only their branches' devices;
hardware nobody enrolled belongs to no branch and is shown to administrators of every branch.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import trio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from device_registry import BusAudit, ImportRefused, PinVault, Registry
from device_registry.directory import PAGE, export_page, list_page
from device_registry.enrolment import HEADER, to_csv_line
from device_registry.pins import PIN_MAX
from services.console.context import ConsoleContext, context
from services.console.security import Can, Principal, branch_filter, check_branch, require
from shared.errors import ClearCardError, ErrorCode

router = APIRouter(prefix="/api/registry", tags=["device registry"])
MAX_IMPORT_BYTES = 20 * 1024 * 1024  # ~280,000 rows; larger files are split (or use the CLI)
_SPOOL_BYTES = 1024 * 1024  # an upload stays in memory up to this size, then goes to a temporary file

_ERROR = {"description": "`{\"error\": {\"code\", \"message\"}}` with a contract error code"}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an invalid or revoked one (`AUTH_REQUIRED`, `AUTH_INVALID`)"},
    403: {"description": "not an administrator, or not of this device's branch (`PERMISSION_DENIED`)"},
    422: {"description": "a parameter is malformed (`INVALID_REQUEST`)"},
}


async def _registry(ctx: ConsoleContext) -> Registry:
    vault = await trio.to_thread.run_sync(PinVault.open, ctx.settings.keys_dir)
    return Registry(ctx.db, vault, BusAudit(ctx.bus))


def _branches(who: Principal, branch: str | None) -> list[str] | None:
    if branch is not None:
        check_branch(who, branch)
        return [branch]
    visible = branch_filter(who)
    return None if visible is None else sorted(visible)


@router.get("/devices", summary="Enrolled devices (retired ones marked) and hardware not enrolled "
            "(as `clearcard device list --json`), a page at a time", responses=_COMMON)
async def list_devices(
    branch: str | None = Query(None, description="only this branch (leaves out unenrolled hardware)"),
    after: str = Query("", max_length=64, description="the `next` value of the page before"),
    limit: int = Query(PAGE, ge=1, le=PAGE),
    ctx: ConsoleContext = Depends(context), who: Principal = Depends(require(Can.ADMIN)),
) -> dict[str, Any]:
    rows = await ctx.db.run(list_page, after, _branches(who, branch), limit)
    return {"devices": rows, "next": rows[-1]["device_id"] if len(rows) == limit else None}


@router.get("/export", summary="The enrolled devices in service as CSV with the import's header, never a PIN "
            "(as `clearcard device export`)", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}}, **_COMMON})
async def export(branch: str | None = Query(None, description="only this branch"),
                 ctx: ConsoleContext = Depends(context),
                 who: Principal = Depends(require(Can.ADMIN))) -> StreamingResponse:
    branches = _branches(who, branch)

    async def pages() -> AsyncIterator[str]:
        yield ",".join(HEADER) + "\r\n"
        after = ""
        while True:  # one page in memory at a time
            page = await ctx.db.run(export_page, after, branches)
            yield "".join(to_csv_line(e) for e in page)
            if len(page) < PAGE:
                return
            after = page[-1].device_id

    return StreamingResponse(pages(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="devices.csv"'})


def _lines(upload: Any) -> Iterator[str]:
    try:
        yield from io.TextIOWrapper(upload, encoding="utf-8", newline="")
    except UnicodeDecodeError as exc:
        raise ClearCardError(ErrorCode.INVALID_REQUEST,
                             f"The file is not UTF-8 text ({exc.reason}); save it as CSV UTF-8. "
                             "Nothing was imported.") from None


@router.post(
    "/import", summary="Enrol the devices of a CSV file: all rows or none (as `clearcard device import`)",
    description=f"The body is the CSV file itself (`{','.join(HEADER)}`). A device already enrolled is "
                "updated; a retired one is brought back into service. With any bad row nothing is imported "
                "and the answer names every bad row with its line number.",
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
    responses={
        200: {"description": "counts: `enrolled`, `updated`, `reinstated`, `unchanged`"},
        400: {"description": "bad rows, nothing imported: `error` (`INVALID_REQUEST`) plus `errors`, a list of "
                             "`{\"line\", \"message\"}`, and `bad_rows`"},
        413: {"description": f"the file is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MiB; split it"},
        **_COMMON})
async def import_file(request: Request, ctx: ConsoleContext = Depends(context),
                      who: Principal = Depends(require(Can.ADMIN))) -> Any:
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as upload:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                return JSONResponse({"error": {"code": ErrorCode.INVALID_REQUEST.value, "message":
                                     f"The file is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MiB; split it. "
                                     "Nothing was imported."}}, status_code=413)
            upload.write(chunk)
        upload.seek(0)
        registry = await _registry(ctx)
        try:
            counts = await registry.import_file(_lines(upload), actor=who.subject, source="console",
                                                name=request.headers.get("x-file-name", "")[:200],
                                                branches=branch_filter(who))
        except ImportRefused as exc:
            return JSONResponse({"error": {"code": exc.code.value, "message": exc.message},
                                 "bad_rows": exc.total,
                                 "errors": [{"line": e.line, "message": e.message} for e in exc.errors]},
                                status_code=400)
    return counts.__dict__


@router.post("/devices/{device_id}/retire", summary="Take a device out of service (as `clearcard device retire`)",
             responses={200: {"description": "`retired`: true; `changed`: false if it already was"},
                        404: {"description": "no such enrolled device (`UNKNOWN_DEVICE`)", **_ERROR},
                        409: {"description": "a clear is running on the device (`DEVICE_BUSY`)", **_ERROR},
                        **_COMMON})
async def retire(device_id: str, ctx: ConsoleContext = Depends(context),
                 who: Principal = Depends(require(Can.ADMIN))) -> dict[str, Any]:
    registry = await _registry(ctx)
    changed = await registry.retire(device_id, actor=who.subject, branches=branch_filter(who))
    return {"device_id": device_id, "retired": True, "changed": changed}


class PinBody(BaseModel):
    pin: str = Field(min_length=1, max_length=PIN_MAX, description="the device's certificate PIN")


@router.put("/devices/{device_id}/pin", summary="Record a device's certificate PIN, stored encrypted "
            "(as `clearcard device set-pin`)",
            responses={200: {"description": "`pin_revision`: the PIN's revision; the next clear tries it"},
                       400: {"description": "a PIN no device could hold (`INVALID_REQUEST`)", **_ERROR},
                       404: {"description": "no such device in service (`UNKNOWN_DEVICE`)", **_ERROR},
                       **_COMMON})
async def set_pin(device_id: str, body: PinBody, ctx: ConsoleContext = Depends(context),
                  who: Principal = Depends(require(Can.ADMIN))) -> dict[str, Any]:
    registry = await _registry(ctx)
    revision = await registry.set_pin(device_id, body.pin, actor=who.subject, branches=branch_filter(who))
    return {"device_id": device_id, "pin_revision": revision}
