"""The system a benchmark drives: a fresh vhost and database, the services (in this process or as
`clearcard serve` processes), an emulated fleet, and one follower of the final events."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks.fleetgen import Group, write_groups
from clearcard.runtime import ALL, start_services
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.api import Bus, Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.config import Settings
from shared.db import Database
from shared.db.migrate import migrate
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode
from tests.support.processes import serving
from tests.support.servers import fresh_database
from tests.support.vhosts import fresh_vhost

__all__ = ["Follower", "fresh_database", "fresh_vhost", "outcomes", "system"]  # what the benchmarks use

FINAL = ("clear.finished", "clear.rejected")


@dataclass
class Follower:
    """One queue for the benchmark's clear.finished/clear.rejected events, dispatched by request id."""

    bus: Bus
    token: str
    waiting: dict[str, trio.Event] = field(default_factory=dict)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished_at: dict[str, float] = field(default_factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        queue = await self.bus.declare_reply_queue()
        for key in FINAL:
            await self.bus.bind(queue, EVENTS, key)
        await self.bus.consume(queue, self._on, prefetch=2000, task_status=task_status)

    async def _on(self, delivery: Delivery) -> None:
        event = json.loads(delivery.body)
        done = self.waiting.pop(str(event.get("request_id")), None)
        if done is not None:
            self.final[event["request_id"]] = event
            self.finished_at[event["request_id"]] = time.perf_counter()
            done.set()

    async def clear(self, branch: str, device_ids: list[str] | None = None) -> tuple[dict[str, Any], float]:
        """Submit one request and wait for its final event; returns it and when it arrived."""
        request = ClearRequest(request_id=f"b-{uuid.uuid4().hex[:16]}", branch_id=branch, period="2026-10",
                               device_ids=device_ids or [])
        done = self.waiting[request.request_id] = trio.Event()
        await self.bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                               headers={"authorization": f"Bearer {self.token}"})
        await done.wait()
        return self.final.pop(request.request_id), self.finished_at.pop(request.request_id)


def outcomes(events: list[dict[str, Any]]) -> dict[str, int]:
    seen = [r["outcome"] for e in events for r in e.get("results", [])]
    return {o: seen.count(o) for o in sorted(set(seen))}


@asynccontextmanager
async def system(args: argparse.Namespace, groups: list[Group], tmp: Path, url: str, dsn: str,
                 env_extra: dict[str, str]) -> AsyncIterator[tuple[Follower, Bus, Database]]:
    """The fleet, the services (here or in processes) and a follower, ready to clear."""
    fleet = tmp / "fleet.toml"
    write_groups(fleet, groups)
    env = {"CLEARCARD_DATA_DIR": str(tmp), "CLEARCARD_FLEET": str(fleet), "CLEARCARD_DATABASE_URL": dsn,
           "CLEARCARD_AMQP_URL": url, "CLEARCARD_BACKUP_SCHEDULE": "off", **env_extra}
    settings = Settings.from_env(env)
    token = KeyRing(settings.keys_dir).issue("bench", Role.ADMIN, ["*"], ttl=7200)  # keys exist before serving
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database.open(dsn, max_size=int(env.get("CLEARCARD_DB_POOL_MAX", 20))))
        await migrate(db)
        bus = await stack.enter_async_context(RabbitBus.connect(url, name="bench"))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        child = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
        child.update(env, CLEARCARD_LOG_LEVEL="WARNING", CLEARCARD_HTTP="127.0.0.1:0")
        if args.workers:
            await stack.enter_async_context(serving(child, *ALL, "--workers", str(args.workers),
                                                    log=tmp / "services.log", ready_within=900,
                                                    ready=b" workers (pids "))
        elif args.gateways or args.coordinators:
            shards = {"CLEARCARD_GATEWAY_SHARDS": str(4 * args.gateways)} if args.gateways > 1 else {}
            await stack.enter_async_context(serving(child, "auth", "backup", "audit", "authority-sim",
                                                    log=tmp / "services.log", ready_within=900))
            for n in range(max(1, args.gateways)):
                await stack.enter_async_context(serving({**child, **shards}, "gateway", log=tmp / f"gateway{n}.log",
                                                        ready_within=900))
            for n in range(max(1, args.coordinators)):
                await stack.enter_async_context(serving(child, "coordinator", log=tmp / f"coordinator{n}.log",
                                                        ready_within=900))
        else:
            saved = dict(os.environ)
            os.environ.update(env_extra)  # the coordinator reads its tunables from the environment
            try:
                await start_services(nursery, ALL, bus, db, settings)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        follower = Follower(bus, token)
        await nursery.start(follower.run)
        yield follower, bus, db
