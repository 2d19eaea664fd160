"""`GET /api/reports/{period}`: a period's results per branch and device, as CSV or Excel."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from services.console.context import ConsoleContext, context
from services.console.report import Report
from services.console.report_files import MEDIA_TYPES, chunks, file_name
from services.console.security import Can, branch_filter, check_branch, require
from services.console.spec import PERIOD_PATTERN, request_locale, responses
from shared.authz import Principal
from shared.i18n import Locale
from shared.messages.base import BranchId

router = APIRouter(prefix="/api", tags=["reports"])


@router.get("/reports/{period}", summary="A period's clears per branch and device (cleared, failed with reasons, "
            "lock dates, backups) as CSV or Excel (.xlsx)", response_class=StreamingResponse,
            responses={200: {"content": {MEDIA_TYPES["csv"]: {"schema": {"type": "string"}},
                                         MEDIA_TYPES["xlsx"]: {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the report, as an attachment"}, **responses()})
async def report(
    request: Request,
    period: str = Path(pattern=PERIOD_PATTERN, description="YYYY-MM"),
    format: Literal["csv", "xlsx"] = Query("xlsx", description="csv: the devices' rows; xlsx: a summary "
                                           "sheet per branch and a sheet of every device"),
    branch: list[BranchId] | None = Query(None, max_length=1000, description="only these branches (repeatable)"),
    lang: Locale | None = Query(None, description="the report's language; default: Accept-Language, else English"),
    ctx: ConsoleContext = Depends(context),
    who: Principal = Depends(require(Can.STATUS)),
) -> StreamingResponse:
    visible = branch_filter(who)
    if branch:
        for b in branch:
            check_branch(who, b)
        visible = set(branch)
    wanted = Report(period=period, branches=visible, locale=lang or request_locale(request))
    return StreamingResponse(chunks(ctx.db, wanted, format), media_type=MEDIA_TYPES[format],
                             headers={"content-disposition": f'attachment; filename="{file_name(period, format)}"'})
