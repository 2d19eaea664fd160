"""What every console route shares in its OpenAPI document: the error body, the statuses it may
answer, the constraints on path and query parameters, and the caller's language."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from pydantic import BaseModel, BeforeValidator, Field

from shared.errors import ClearCardError, ErrorCode
from shared.i18n import Locale, negotiate

PERIOD_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"  # request, branch and fleet ids (contract §3)
DEVICE_PATTERN = r"^[0-9]{12}$"
TAXPAYER_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # free text a person typed: no control characters (PostgreSQL refuses NUL)


class ErrorDetail(BaseModel):
    code: ErrorCode
    message: str = Field(description="plain words for a person, in the language asked for (Accept-Language)")
    reason: str | None = None
    locked_until: str | None = None


class ErrorBody(BaseModel):
    """Errors look the same over HTTP as in events: {"error": {"code", "message"}}."""

    error: ErrorDetail


Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Every status a route may answer besides its success, by what causes it.
UNAUTHORIZED: Responses = {401: _error("no token, or a forged, expired or revoked one (AUTH_REQUIRED, AUTH_INVALID)")}
FORBIDDEN: Responses = {403: _error("the token's role or branches do not allow this (PERMISSION_DENIED)")}
INVALID: Responses = {422: _error("the request does not match this schema (INVALID_REQUEST)")}
NOT_FOUND: Responses = {404: _error("no such resource, or none the caller may see")}
CONFLICT: Responses = {409: _error("refused as asked (PLAN_CHANGED, CONFIRMATION_REQUIRED, ...)")}
TIMEOUT: Responses = {504: _error("a service behind the console did not answer in time (TIMEOUT)")}
UNAVAILABLE: Responses = {503: _error("the device, bureau or broker is unreachable")}
ERROR_RESPONSES: Responses = {**UNAUTHORIZED, **FORBIDDEN, **INVALID}


def responses(*groups: Responses) -> Responses:
    """The error responses of a route: 401, 403 and 422 always, plus the given ones."""
    merged: Responses = dict(ERROR_RESPONSES)
    for group in groups:
        merged.update(group)
    return merged


class ConsoleError(ClearCardError):
    """A ClearCardError with an HTTP status of its own, extra fields, or a message already in the
    caller's language."""

    def __init__(self, code: ErrorCode, message: str | None = None, *, status: int | None = None,
                 localized: bool = False, **extra: Any) -> None:
        super().__init__(code, message)
        self.status = status
        self.localized = localized
        self.extra = extra


class NotFound(ConsoleError):
    """404: nothing of that id exists that the caller may see."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message, status=404)


def request_locale(request: Request) -> Locale:
    """The caller's language from Accept-Language; English when it asks for none (API clients)."""
    return negotiate(request.headers.get("accept-language"), default="en")


def _iso_8601(value: Any) -> Any:
    # pydantic would also take a number of seconds ("0.5"): the schema says date-time, so only that
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.strip().upper().replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]
SSE_EVENT_SCHEMA = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "description": "the event's routing key, e.g. clear.progress"},
    "data": {"type": "string", "description": "the event as JSON (contract §3)"}}}
