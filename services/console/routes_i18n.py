"""`GET /i18n/{locale}`: the message catalogue the web console speaks. It is outside /api, where
every route wants a token (contract §6): the sign-in page itself is written in these words."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.console.spec import INVALID
from shared.i18n import Locale, for_browser

router = APIRouter(tags=["sign-in"])


class Catalogue(BaseModel):
    locale: Locale
    messages: dict[str, str] = Field(description="English text -> its translation (empty for English)")
    errors: dict[str, str] = Field(description="every error code -> its plain words in this locale")


@router.get("/i18n/{locale}", summary="The console's words in one language (zh-CN or en)", response_model=Catalogue,
            responses={**INVALID})
async def catalogue(locale: Locale) -> Any:
    return JSONResponse(for_browser(locale), headers={"cache-control": "public, max-age=300"})
