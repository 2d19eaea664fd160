"""`clearcard demo --console`: the embedded demo with the web console, until Ctrl-C.

Every service and the console run in this process on the in-memory bus and embedded PostgreSQL,
over a three-branch sample fleet. A demo administrator is created (or reset) with a fresh password
and TOTP secret, both printed with the console's URL, so a newcomer can sign in as a person would.
One branch is cleared at once, so the month at a glance has something to show.
"""

from __future__ import annotations

import secrets
import signal
import sys
from functools import partial
from typing import Any

import pyotp
import trio
from rich.console import Console

from clearcard.demo import DEMO_BRANCH, console_device_ids, console_fleet, demo_clock, fresh_fleet
from clearcard.direct_audit import DirectAudit
from clearcard.follow import new_request_id, submit_and_follow
from clearcard.runtime import ALL, identified, infrastructure, start_services
from services.auth.accounts import AccountError, add_account, enroll_totp, get_account, set_password, unlock
from services.console.service import serve_console
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.config import Settings
from shared.db import Database
from shared.messages.clear import ClearRequest

DEMO_ADMIN = "demo-admin"


async def demo_admin(db: Database) -> tuple[str, str, str]:
    """(user name, password, TOTP secret) of the demo's administrator, made anew each run."""
    audit = DirectAudit(db)
    password = secrets.token_urlsafe(12)
    if await get_account(db, DEMO_ADMIN) is None:
        await add_account(db, audit, actor="demo", username=DEMO_ADMIN, kind="person", role=Role.ADMIN,
                          branches=["*"], password=password)
    else:
        await set_password(db, audit, actor="demo", username=DEMO_ADMIN, password=password)
        await unlock(db, audit, actor="demo", username=DEMO_ADMIN)
    uri = await enroll_totp(db, audit, actor="demo", username=DEMO_ADMIN)
    return DEMO_ADMIN, password, str(pyotp.parse_uri(uri).secret)


def _line(text: str) -> None:
    # plain lines, never wrapped: people copy them and scripts read them
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _first_clear(bus: Any, settings: Settings, period: str, console: Console) -> None:
    token = KeyRing(settings.keys_dir).issue("demo-operator", Role.OPERATOR, [DEMO_BRANCH], ttl=600)
    request = ClearRequest(request_id=new_request_id(), branch_id=DEMO_BRANCH, period=period, mode="auto")
    with trio.fail_after(120):
        followed = await submit_and_follow(bus, request, token)
    final = followed.final
    console.print(f"first clear, branch {DEMO_BRANCH}: {final.get('status', final['event'])} "
                  f"(trace {final['trace_id']})", soft_wrap=True)


async def run_console_demo(settings: Settings, console: Console) -> int:
    """Serve the demo with its console until SIGINT or SIGTERM; returns the exit code."""
    clock, period = demo_clock()
    settings = fresh_fleet(settings, console_fleet(clock, period), console_device_ids())
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with infrastructure(settings) as (bus, db), trio.open_nursery() as nursery:
            await start_services(nursery, ALL, bus, db, settings)
            try:
                url = await nursery.start(partial(serve_console, identified(bus, "console", settings), db, settings))
            except OSError as exc:
                console.print(f"[red]error:[/red] cannot serve the console on {settings.http_host}:"
                              f"{settings.http_port} ({exc}); set CLEARCARD_HTTP to a free host:port")
                nursery.cancel_scope.cancel()
                return 2
            try:
                username, password, secret = await demo_admin(db)
            except AccountError as exc:
                console.print(f"[red]error:[/red] could not create the demo administrator: {exc}")
                nursery.cancel_scope.cancel()
                return 1
            console.print(f"[bold]ClearCard demo with the web console[/bold]: period {period}, emulated device "
                          f"clock {clock.isoformat()}, data dir {settings.data_dir}", soft_wrap=True)
            _line(f"console: {url}/")
            _line(f"user: {username}")
            _line(f"password: {password}")
            _line(f"totp secret: {secret}")
            _line(f"totp uri: {pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name='ClearCard')}")
            console.print("Add the TOTP secret to an authenticator app (or run: python -c \"import pyotp; "
                          f"print(pyotp.TOTP('{secret}').now())\") for the one-time code.", soft_wrap=True)
            await _first_clear(bus, settings, period, console)
            _line("ready; Ctrl-C stops the demo")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    console.print("stopped")
    return 0
