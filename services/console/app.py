"""The console's ASGI application: contract §6 endpoints, the HTTP API and the web console."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import routes_admin, routes_clears, routes_dlq, routes_fleet, routes_ops, routes_registry
from services.console.context import ConsoleContext
from services.console.headers import SecurityHeaders
from shared import metrics
from shared.errors import ClearCardError, ErrorCode
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


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """Errors look the same over HTTP as in events: {"error": {"code", "message"}}."""
    return {"error": {"code": code, "message": message}}


async def _clearcard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClearCardError)
    headers = {"www-authenticate": "Bearer"} if HTTP_STATUS.get(exc.code) == 401 else None
    return JSONResponse(error_body(exc.code.value, exc.message), status_code=HTTP_STATUS.get(exc.code, 409),
                        headers=headers)


async def _outage(request: Request, exc: Exception) -> JSONResponse:
    """The database or broker is away: 503, in plain words, and the caller may try again."""
    return JSONResponse(error_body(ErrorCode.TIMEOUT.value, "The database or message broker is unreachable "
                                   "right now; try again in a moment."), status_code=503,
                        headers={"retry-after": "5"})


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return JSONResponse(error_body(ErrorCode.INVALID_REQUEST.value, problems), status_code=422)


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
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _outage)
    for module in (routes_ops, routes_fleet, routes_clears, routes_admin, routes_registry, routes_dlq):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"cache-control": "no-cache"})

    app.add_middleware(CountRequests)
    app.add_middleware(SecurityHeaders)
    return app
