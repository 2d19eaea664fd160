"""The console's ASGI application: contract §6 endpoints, the HTTP API and the web console."""

from __future__ import annotations

from importlib import resources
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import (
    routes_admin,
    routes_clears,
    routes_dlq,
    routes_fleet,
    routes_fleet_clears,
    routes_i18n,
    routes_login,
    routes_month,
    routes_ops,
    routes_registry,
    routes_reports,
)
from services.console.context import ConsoleContext
from services.console.headers import SecurityHeaders
from services.console.spec import ConsoleError, request_locale
from shared import metrics
from shared.errors import ClearCardError, ErrorCode
from shared.i18n import translated_message
from shared.outages import OUTAGE_ERRORS

STATIC = resources.files("services.console") / "static"

# contract error code -> HTTP status; anything else is a refusal of the request as asked (409)
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_INVALID: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNKNOWN_BRANCH: 404,
    ErrorCode.UNKNOWN_DEVICE: 404,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.AUTHORITY_UNAVAILABLE: 503,
    ErrorCode.DEVICE_OFFLINE: 503,
    ErrorCode.INTERNAL: 500,
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, dict[str, Any]]:
    """Errors look the same over HTTP as in events: {"error": {"code", "message"}}."""
    return {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}


async def _clearcard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClearCardError)
    status, extra, message = HTTP_STATUS.get(exc.code, 409), {}, exc.message
    if isinstance(exc, ConsoleError):
        status, extra = exc.status or status, exc.extra
    if not getattr(exc, "localized", False):
        message = translated_message(exc.code, exc.message, request_locale(request))
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc.code.value, message, **extra), status_code=status, headers=headers)


async def _outage(request: Request, exc: Exception) -> JSONResponse:
    """The database or broker is away: 503, in plain words, and the caller may try again."""
    return JSONResponse(error_body(ErrorCode.TIMEOUT.value, "The database or message broker is unreachable "
                                   "right now; try again in a moment."), status_code=503,
                        headers={"retry-after": "5"})


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    message = translated_message(ErrorCode.INVALID_REQUEST, problems, request_locale(request))
    return JSONResponse(error_body(ErrorCode.INVALID_REQUEST.value, message), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own refusals (a body that is not JSON, an unknown path) in the console's error shape
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        message = translated_message(ErrorCode.INVALID_REQUEST, f"The body could not be read: {exc.detail}",
                                     request_locale(request))
        return JSONResponse(error_body(ErrorCode.INVALID_REQUEST.value, message), status_code=422)
    code = ErrorCode.AUTH_REQUIRED if exc.status_code == 401 else ErrorCode.INVALID_REQUEST
    headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
    if exc.status_code == 405:  # Starlette names only the first route of the path; a path has several
        headers["allow"] = ", ".join(_methods_of(request))
    return JSONResponse(error_body(code.value, str(exc.detail)), status_code=exc.status_code, headers=headers)


def _methods_of(request: Request) -> list[str]:
    """Every method some route of the request's path answers."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _refused_by_database(request: Request, exc: Exception) -> JSONResponse:
    # input PostgreSQL cannot store (a NUL character, an out-of-range value) is the caller's to fix
    message = translated_message(ErrorCode.INVALID_REQUEST, f"The database refused a value: {exc}",
                                 request_locale(request))
    return JSONResponse(error_body(ErrorCode.INVALID_REQUEST.value, message), status_code=422)


class CountRequests:
    """ASGI middleware: `clearcard_http_requests` by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "other")
            metrics.HTTP_REQUESTS.labels(path, scope["method"], str(status)).inc()


def create_app(ctx: ConsoleContext) -> FastAPI:
    """The application over one console context."""
    app = FastAPI(
        title="ClearCard console",
        version="0.1.0",
        description="Fleet status with lock-date countdown, clears with preview and confirmation, live "
                    "progress, the audit log and backups. Every /api route takes `Authorization: Bearer <token>` "
                    "(a token from `clearcard token issue` or `POST /api/login`) and applies the same roles and "
                    "branch scopes as the message bus. Errors are `{\"error\": {\"code\", \"message\"}}` with "
                    "the contract's error codes.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.add_exception_handler(ClearCardError, _clearcard_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(asyncpg.DataError, _refused_by_database)
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _outage)
    for module in (routes_ops, routes_login, routes_i18n, routes_fleet, routes_month, routes_reports,
                   routes_fleet_clears, routes_clears, routes_admin, routes_registry, routes_dlq):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"cache-control": "no-cache"})

    app.add_middleware(CountRequests)
    app.add_middleware(SecurityHeaders)
    return app
