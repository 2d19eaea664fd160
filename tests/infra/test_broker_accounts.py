"""Broker accounts per service (infra/rabbitmq/accounts.py), on real RabbitMQ: every service on
its own account clears a device, and an account cannot do what its service never does.

The users are created for the test with unique names on a fresh vhost, given exactly the
generated permissions, and deleted afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import trio

from clearcard.follow import new_request_id, submit_and_follow
from clearcard.runtime import ALL, identified, start_services
from shared.authz import KeyRing, Role
from shared.bus.api import BusError, Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import AUDIT, COMMANDS, EVENTS
from shared.config import Settings
from shared.db import Database
from shared.messages.clear import ClearRequest
from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.vhosts import fresh_vhost, rabbitmqctl

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def _accounts() -> ModuleType:
    """infra/ is deployment material, not a package of the product: imported from the checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("infra.rabbitmq.accounts")


def password_hash(password: str) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@asynccontextmanager
async def accounts_on(vhost: str, url: str) -> AsyncIterator[dict[str, str]]:
    """Each generated account as a user of this test (one import: rabbitmqctl is slow to start);
    yields service -> AMQP URL."""
    tag = secrets.token_hex(4)
    generated = _accounts().definitions(vhost, ["default"])
    urls: dict[str, str] = {}
    renamed = {}
    for account in _accounts().accounts(["default"]):
        user, password = f"{account.user}-{tag}", secrets.token_hex(16)
        renamed[account.user] = (user, password)
        parts = urlsplit(url)
        urls[account.service] = urlunsplit((parts.scheme, f"{quote(user)}:{password}@{parts.hostname}:"
                                            f"{parts.port or 5672}", parts.path, "", ""))
    doc = {
        "users": [{**u, "name": renamed[u["name"]][0], "password_hash": password_hash(renamed[u["name"]][1])}
                  for u in generated["users"]],
        "permissions": [{**p, "user": renamed[p["user"]][0]} for p in generated["permissions"]],
        "topic_permissions": [{**t, "user": renamed[t["user"]][0]} for t in generated["topic_permissions"]],
    }
    try:
        # a world-readable file: rabbitmqctl cannot read the test's private tmp_path
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as defs:
            json.dump(doc, defs)
            defs.flush()
            os.chmod(defs.name, 0o644)
            await rabbitmqctl("import_definitions", defs.name)
        yield urls
    finally:
        with trio.CancelScope(shield=True):
            for user, _ in renamed.values():
                await rabbitmqctl("delete_user", user)


async def test_every_service_on_its_own_account_clears_a_branch(tmp_path: Path, database: Database,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SCHEDULER", "0")
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_DATABASE_URL": database.dsn,
                                  "CLEARCARD_FLEET": str(two_family_fleet(tmp_path / "fleet.toml"))})
    token = KeyRing(settings.keys_dir).issue("ops", Role.OPERATOR, [BRANCH])
    async with fresh_vhost() as url, accounts_on(url.rsplit("/", 1)[1].replace("%2F", "/"), url) as urls, \
            AsyncExitStack() as stack:
        buses = {name: await stack.enter_async_context(RabbitBus.connect(urls[account], name=f"clearcard.{account}"))
                 for name, account in [*((s, s) for s in ALL), ("cli", "cli"), ("gateway-2", "gateway"),
                                       ("console", "console")]}
        async with trio.open_nursery() as nursery:
            for service in ALL:
                await start_services(nursery, [service], buses[service], database, settings)
            request = ClearRequest.model_validate({"request_id": new_request_id(), "branch_id": BRANCH,
                                                   "period": "2026-10"})
            with trio.fail_after(90):
                followed = await submit_and_follow(buses["cli"], request, token)
            # what the accounts refuse: a gateway sending a write-back or forging events, the
            # command line sending device commands, a console reading the audit queue
            gateway = identified(buses["gateway-2"], "gateway", settings)
            refusals = []
            for attempt in (lambda: gateway.publish(COMMANDS, "gateway.default.writeback", b"{}", message_id="x"),
                            lambda: gateway.publish(EVENTS, "clear.finished", b"{}", message_id="y"),
                            lambda: buses["cli"].publish(COMMANDS, "gateway.default.info", b"{}", message_id="z")):
                with pytest.raises(BusError) as refused:
                    await attempt()
                refusals.append(str(refused.value))

            async def ignore(_: Delivery) -> None:
                raise AssertionError("the console's account must not read the audit queue")

            with pytest.raises(BusError) as reading:
                await buses["console"].consume(AUDIT.name, ignore)
            nursery.cancel_scope.cancel()
    assert followed.final["status"] == "succeeded", followed.final
    assert all("ACCESS_REFUSED" in r for r in refusals), refusals
    assert "ACCESS_REFUSED" in str(reading.value)
