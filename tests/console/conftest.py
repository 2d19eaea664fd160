"""The console on a free port over a real PostgreSQL: alone, or with the whole system on MemoryBus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from clearcard.runtime import ALL, identified, start_services
from services.console.service import serve_console
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.db import Database
from tests.support.fleets import BRANCH, two_family_fleet


@dataclass
class Console:
    base_url: str
    bus: MemoryBus
    db: Database
    settings: Settings
    keys: KeyRing

    def token(self, role: Role = Role.ADMIN, branches: tuple[str, ...] = ("*",), subject: str = "tester") -> str:
        return self.keys.issue(subject, role, list(branches))

    def client(self, role: Role | None = Role.ADMIN, branches: tuple[str, ...] = ("*",)) -> httpx.AsyncClient:
        headers = {} if role is None else {"authorization": f"Bearer {self.token(role, branches)}"}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


def _settings(tmp_path: Path, database: Database, fleet: Path | None) -> Settings:
    env = {"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_DATABASE_URL": database.dsn,
           "CLEARCARD_HTTP": "127.0.0.1:0"}
    if fleet is not None:
        env["CLEARCARD_FLEET"] = str(fleet)
    return Settings.from_env(env)


async def _run(settings: Settings, database: Database, services: tuple[str, ...]) -> AsyncIterator[Console]:
    bus = MemoryBus()
    async with trio.open_nursery() as nursery:
        await start_services(nursery, services, bus, database, settings)
        # the console signs and checks internal messages like every service (clearcard.runtime)
        base_url = await nursery.start(partial(serve_console, identified(bus, "console", settings), database,
                                               settings))
        yield Console(base_url, bus, database, settings, KeyRing(settings.keys_dir))
        nursery.cancel_scope.cancel()


@pytest.fixture
async def console(tmp_path: Path, database: Database) -> AsyncIterator[Console]:
    """Only the console (no other service) on an in-memory bus."""
    async for c in _run(_settings(tmp_path, database, None), database, ()):
        yield c


@pytest.fixture
async def signin(tmp_path: Path, database: Database) -> AsyncIterator[Console]:
    """The console with the auth and audit services (sign-in over the bus)."""
    async for c in _run(_settings(tmp_path, database, None), database, ("audit", "auth")):
        yield c


async def add_person(db: Database, username: str, role: Role, branches: list[str], password: str) -> str:
    """A person's account with a password and TOTP; returns the TOTP secret (base32)."""
    import pyotp

    from clearcard.direct_audit import DirectAudit
    from services.auth.accounts import add_account, enroll_totp

    audit = DirectAudit(db)
    await add_account(db, audit, actor="test", username=username, kind="person", role=role, branches=branches,
                      password=password)
    uri = await enroll_totp(db, audit, actor="test", username=username)
    secret: str = pyotp.parse_uri(uri).secret
    return secret


@pytest.fixture
async def keepers(tmp_path: Path, database: Database) -> AsyncIterator[Console]:
    """The console with the audit and backup services, which answer its reads of the log and backups."""
    async for c in _run(_settings(tmp_path, database, None), database, ("audit", "backup")):
        yield c


@pytest.fixture
async def system(tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Console]:
    """Every service on an in-memory bus, a two-device fleet in BRANCH, and the console."""
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SCHEDULER", "0")  # the clears here are the tests' own
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async for c in _run(_settings(tmp_path, database, fleet), database, ALL):
        yield c


__all__ = ["BRANCH", "Console", "add_person"]
