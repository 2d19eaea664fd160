"""A multi-device clear survives SIGKILLs of the coordinator (at several steps) and of the
gateway, and the broker closing every connection twice: each still ends `succeeded`, and every
device shows exactly one report and one write-back per type.

Services run as separate `clearcard serve` processes on a fresh RabbitMQ vhost and a fresh
database; the test follows the request's events with its own connection and pulls the plug
when a device reaches the chosen step. The coordinator runs with a 2 s lease so recovery is
quick.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from shared.bus.api import Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode
from tests.e2e.fleets import BRANCH, CLOCK, device
from tests.e2e.processes import cli, environment, fresh_vhost, rabbitmqctl, serving

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

DEVICES = {
    "661500000011": ("ukey", "91420100MA4K0001XK", ["004", "007", "026"]),
    "539900000014": ("tax_control_disk", "91110000MA01A0BC3M", ["004", "025"]),
    "661500000012": ("golden_tax_disk", "91420100MA4K0001XK", ["004", "007"]),
}
OTHERS = ("auth", "backup", "audit", "authority-sim")
FAST_RECOVERY = {"CLEARCARD_COORDINATOR_LEASE_SECONDS": "2", "CLEARCARD_COORDINATOR_POLL_INTERVAL": "0.3",
                 "CLEARCARD_COORDINATOR_GATEWAY_DEADLINE": "8", "CLEARCARD_COORDINATOR_SERVICE_DEADLINE": "8",
                 "CLEARCARD_COORDINATOR_RETRY_ATTEMPTS": "6"}


def fleet(path: Path) -> Path:
    text = f'clock = "{CLOCK}"\n\n' + "\n".join(
        device(d, family, taxpayer, types, machine_no=i, latency_ms=40)
        for i, (d, (family, taxpayer, types)) in enumerate(DEVICES.items()))
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Follower:
    """Every event of one request, with waiters for 'device D reached step S'."""

    request_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def on_delivery(self, delivery: Delivery) -> None:
        event = json.loads(delivery.body)
        if event.get("request_id") == self.request_id:
            self.events.append(event)
            self.changed.set()
            self.changed = trio.Event()

    async def until(self, seen: Callable[[list[dict[str, Any]]], bool]) -> None:
        with trio.fail_after(90):
            while not seen(self.events):
                await self.changed.wait()

    def reached(self, step: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda events: any(e["event"] == "clear.progress" and e["step"] == step for e in events)

    @property
    def finished(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == "clear.finished"), None)


@dataclass
class Cluster:
    env: dict[str, str]
    tmp: Path
    stack: AsyncExitStack
    processes: dict[str, trio.Process] = field(default_factory=dict)
    starts: int = 0

    async def start(self, name: str, *services: str) -> None:
        self.starts += 1
        self.processes[name] = await self.stack.enter_async_context(
            serving(self.env, *services, log=self.tmp / f"{name}-{self.starts}.log"))

    async def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        await process.wait()


@asynccontextmanager
async def cluster(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Cluster, str]]:
    async with fresh_vhost() as url, AsyncExitStack() as stack:
        env = environment(tmp_path / "data", url, database_url, fleet(tmp_path / "fleet.toml"))
        env.update(FAST_RECOVERY)
        c = Cluster(env, tmp_path, stack)
        await c.start("others", *OTHERS)
        await c.start("gateway", "gateway")
        await c.start("coordinator", "coordinator")
        yield c, url


@asynccontextmanager
async def following(url: str, env: dict[str, str]) -> AsyncIterator[tuple[Follower, Callable[[], Any]]]:
    token = (await cli(env, "token", "issue", "--subject", "faults", "--role", "operator",
                       "--branch", BRANCH)).stdout.decode().strip()
    request = ClearRequest(request_id=f"fault-{uuid.uuid4().hex[:8]}", branch_id=BRANCH, period="2026-10")
    follower = Follower(request.request_id)
    async with RabbitBus.connect(url, name="fault-test") as bus, trio.open_nursery() as nursery:
        queue = await bus.declare_reply_queue()
        await bus.bind(queue, EVENTS, "clear.*")
        await nursery.start(lambda task_status: bus.consume(queue, follower.on_delivery, task_status=task_status))

        async def submit() -> None:
            await bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                              headers={"authorization": f"Bearer {token}"})

        yield follower, submit
        nursery.cancel_scope.cancel()


async def assert_exactly_once(env: dict[str, str], follower: Follower, submit: Callable[[], Any]) -> None:
    with trio.fail_after(100):
        while follower.finished is None:
            # an event published while our own connection was down is lost to us: publishing the
            # same request again repeats no work, and a finished request answers with its final event
            with trio.move_on_after(10):
                await follower.until(lambda events: any(e["event"] == "clear.finished" for e in events))
            if follower.finished is None:
                await submit()
    finished = follower.finished
    assert finished is not None and finished["status"] == "succeeded", finished
    assert {r["outcome"] for r in finished["results"]} == {"cleared"}, finished
    for device_id, (_family, _taxpayer, types) in DEVICES.items():
        shown = json.loads((await cli(env, "emulator", "show", device_id, "--json")).stdout)
        assert sorted(w["invoice_type"] for w in shown["writebacks"]) == sorted(types), shown["writebacks"]
        assert sorted(r["invoice_type"] for r in shown["reports"]) == sorted(types), shown["reports"]
        assert set(shown["status"].values()) == {2}
        steps = [e["step"] for e in follower.events if e["event"] == "clear.progress" and e["device_id"] == device_id]
        # resumed steps may be announced again (same message id), but never out of order
        assert steps == sorted(steps, key=STEP_ORDER.index), steps
        assert steps[-1] == "verified"


STEP_ORDER = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
              "declaration_checked", "written_back", "verified"]


async def test_coordinator_sigkilled_at_several_steps(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url) as (c, url), following(url, c.env) as (follower, submit):
        await submit()
        for step in ("prechecked", "reported", "written_back"):
            await follower.until(follower.reached(step))
            await c.kill("coordinator")
            await c.start("coordinator", "coordinator")
        await assert_exactly_once(c.env, follower, submit)


async def test_gateway_sigkilled_after_reported(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url) as (c, url), following(url, c.env) as (follower, submit):
        await submit()
        await follower.until(follower.reached("reported"))
        await c.kill("gateway")
        await c.start("gateway", "gateway")
        await assert_exactly_once(c.env, follower, submit)


async def test_broker_closes_every_connection_twice(tmp_path: Path, database_url: str) -> None:
    async with cluster(tmp_path, database_url) as (c, url), following(url, c.env) as (follower, submit):
        await submit()
        for step in ("backed_up", "declaration_checked"):
            await follower.until(follower.reached(step))
            await rabbitmqctl("close_all_connections", "fault test")
        await assert_exactly_once(c.env, follower, submit)
