"""A multi-device clear on separate `clearcard serve` processes, followed from the outside.

Services run as their own processes on a fresh RabbitMQ vhost and a fresh database (see
tests/support/processes.py); the test follows the request's events with its own broker connection
and injects a fault when a device reaches a chosen step. `assert_exactly_once` is the verdict
every fault scenario shares: the request finished, nothing was applied twice and the audit
chain verifies.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from shared.bus.api import BusError, Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode
from tests.support.fleets import BRANCH, CLOCK, device
from tests.support.processes import CLEARCARD as CLI
from tests.support.processes import cli, environment
from tests.support.vhosts import fresh_vhost


def fault_scenario(timeout_s: int = 180) -> list[pytest.MarkDecorator]:
    """A fault scenario's marks: real broker and database (private servers only: it stops them), slow."""
    return [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow, pytest.mark.fault,
            pytest.mark.timeout(timeout_s)]


DEVICES = {
    "661500000011": ("ukey", "91420100MA4K0001XK", ["004", "007", "026"]),
    "539900000014": ("tax_control_disk", "91110000MA01A0BC3M", ["004", "025"]),
    "661500000012": ("golden_tax_disk", "91420100MA4K0001XK", ["004", "007"]),
}
EVERY_SERVICE = ("auth", "coordinator", "backup", "audit", "gateway", "authority-sim")
# the historical layout of test_crashes.py: everything but the gateway and coordinator together
GROUPED = {"others": ("auth", "backup", "audit", "authority-sim"), "gateway": ("gateway",),
           "coordinator": ("coordinator",)}
SEPARATE = {name: (name,) for name in EVERY_SERVICE}
FAST_RECOVERY = {"CLEARCARD_COORDINATOR_LEASE_SECONDS": "2", "CLEARCARD_COORDINATOR_POLL_INTERVAL": "0.3",
                 "CLEARCARD_COORDINATOR_GATEWAY_DEADLINE": "8", "CLEARCARD_COORDINATOR_SERVICE_DEADLINE": "8",
                 "CLEARCARD_COORDINATOR_RETRY_ATTEMPTS": "6"}
STEP_ORDER = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
              "declaration_checked", "written_back", "verified"]
WAIT_FOR_STEP_S = 60
WAIT_FOR_FINISH_S = 90
# every service process any test started: conftest kills what is left if a test is cut short
# (pytest-timeout interrupts the trio run, and then no `finally` of ours runs)
SPAWNED: list[trio.Process] = []


def fleet(path: Path, latency_ms: Mapping[str, int] | None = None) -> Path:
    """The three-family fleet of DEVICES, 40 ms per device command unless `latency_ms` says otherwise."""
    latency_ms = latency_ms or {}
    text = f'clock = "{CLOCK}"\n\n' + "\n".join(
        device(d, family, taxpayer, types, machine_no=i, latency_ms=latency_ms.get(d, 40))
        for i, (d, (family, taxpayer, types)) in enumerate(DEVICES.items()))
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Follower:
    """Every event of some requests, with waiters for 'device D reached step S'."""

    request_ids: set[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    message_ids: set[str] = field(default_factory=set)

    async def on_delivery(self, delivery: Delivery) -> None:
        # the relay publishes a batch again when marking it published failed (a database cut):
        # the same message ids, which a consumer drops as the contract says
        if delivery.message_id in self.message_ids:
            return
        if delivery.message_id:
            self.message_ids.add(delivery.message_id)
        event = json.loads(delivery.body)
        if event.get("request_id") in self.request_ids:
            self.events.append(event)
            self.changed.set()
            self.changed = trio.Event()

    async def until(self, seen: Callable[[list[dict[str, Any]]], bool], seconds: float = WAIT_FOR_STEP_S) -> None:
        with trio.move_on_after(seconds):
            while not seen(self.events):
                await self.changed.wait()
            return
        finished = {e["request_id"]: e for e in self.events if e["event"] == "clear.finished"}
        raise AssertionError(f"waited {seconds:g} s in vain; steps seen: "
                             f"{ {r: self.progress(r) for r in sorted(self.request_ids)} }; finished: {finished}")

    def reached(self, step: str, device_id: str | None = None,
                request_id: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
        """'Some device (or `device_id`) of some request (or `request_id`) announced `step`.'"""
        return lambda events: any(
            e["event"] == "clear.progress" and e["step"] == step
            and device_id in (None, e["device_id"]) and request_id in (None, e["request_id"])
            for e in events)

    def finished(self, request_id: str) -> dict[str, Any] | None:
        return next((e for e in self.events
                     if e["event"] == "clear.finished" and e["request_id"] == request_id), None)

    def progress(self, request_id: str) -> dict[str, list[str]]:
        """Steps announced per device of one request (for failure messages)."""
        seen: dict[str, list[str]] = {}
        for e in self.events:
            if e["event"] == "clear.progress" and e["request_id"] == request_id:
                seen.setdefault(e["device_id"], []).append(e["step"])
        return seen

    def steps(self, request_id: str, device_id: str) -> list[str]:
        return [e["step"] for e in self.events if e["event"] == "clear.progress"
                and e["request_id"] == request_id and e["device_id"] == device_id]


@dataclass
class Served:
    """One `clearcard serve ...` process and its log."""

    services: tuple[str, ...]
    process: trio.Process
    log: Path
    stopped: bool = False

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


@dataclass
class Cluster:
    """The service processes of one test: `env` is what they run with, `direct` what the CLI uses.

    The two differ only when a proxy sits between the services and the broker or database;
    the test's own commands (`emulator show`, `audit verify`) always go straight.
    """

    env: dict[str, str]
    direct: dict[str, str]
    tmp: Path
    layout: Mapping[str, tuple[str, ...]]
    processes: dict[str, Served] = field(default_factory=dict)
    starts: int = 0
    token: str = ""  # an operator's token for BRANCH
    env_for: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per process, over `env`

    async def start(self, *names: str) -> None:
        """Start the named processes of the layout together and wait until each is serving."""
        spawned = []
        for name in names:
            self.starts += 1
            log = self.tmp / f"{name}-{self.starts}.log"
            with log.open("wb") as sink:  # the child keeps its own descriptor
                process = await trio.lowlevel.open_process(
                    [*CLI, "serve", *self.layout[name]], env={**self.env, **self.env_for.get(name, {})},
                    stdout=sink, stderr=sink)
            SPAWNED.append(process)
            self.processes[name] = served = Served(self.layout[name], process, log)
            spawned.append(served)
        with trio.fail_after(90):
            for served in spawned:
                while b"serving" not in await trio.Path(served.log).read_bytes():
                    if served.process.poll() is not None:
                        raise AssertionError(f"serve {served.services} exited early:\n{served.tail()}")
                    await trio.sleep(0.1)  # polling a child's log: there is no event to wait on

    async def kill(self, name: str) -> None:
        """SIGKILL: no cleanup, no goodbye to the broker or the database."""
        served = self.processes.pop(name)
        served.process.send_signal(signal.SIGKILL)
        await served.process.wait()

    async def restart(self, name: str) -> None:
        await self.kill(name)
        await self.start(name)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its connections and answers nothing."""
        self.processes[name].stopped = True
        self.processes[name].process.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.processes[name].process.send_signal(signal.SIGCONT)
        self.processes[name].stopped = False

    async def stop_all(self) -> None:
        """SIGTERM each process (SIGCONT first if paused), SIGKILL what does not end in 20 s."""
        with trio.CancelScope(shield=True):
            for served in self.processes.values():
                if served.process.poll() is None:
                    if served.stopped:
                        served.process.send_signal(signal.SIGCONT)
                    served.process.terminate()
            for served in self.processes.values():
                with trio.move_on_after(20):
                    await served.process.wait()
                if served.process.poll() is None:
                    served.process.kill()
                    await served.process.wait()

    def exited(self) -> dict[str, int]:
        """Processes that ended by themselves (name -> exit code): none may, whatever the fault."""
        return {name: code for name, served in self.processes.items()
                if (code := served.process.poll()) is not None}

    def logs(self) -> str:
        """Every log of this test, for a failure message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(encoding='utf-8', errors='replace')[-4000:]}"
                         for p in sorted(self.tmp.glob("*.log")))


@asynccontextmanager
async def cluster(
    tmp_path: Path, database_url: str, *, layout: Mapping[str, tuple[str, ...]] = SEPARATE,
    overrides: Mapping[str, str] | None = None, latency_ms: Mapping[str, int] | None = None,
    service_urls: Callable[[str, str], tuple[str, str]] | None = None,
    amqp_url_for: Mapping[str, Callable[[str], str]] | None = None,
    database_url_for: Mapping[str, Callable[[str], str]] | None = None,
    deferred: Iterable[str] = (),
) -> AsyncIterator[tuple[Cluster, str]]:
    """Every process of `layout` on a fresh vhost; yields the cluster and the broker URL for the test.

    `service_urls(amqp_url, database_url)` may give the services other URLs (a proxy's), and
    `amqp_url_for[process](amqp_url)` / `database_url_for[process](database_url)` one process
    alone another URL. Processes named in `deferred` are left for the test to start.
    """
    async with fresh_vhost() as url:
        direct = environment(tmp_path / "data", url, database_url,
                             fleet(tmp_path / "fleet.toml", latency_ms))
        direct.update(FAST_RECOVERY)
        direct.update(overrides or {})
        env = dict(direct)
        if service_urls is not None:
            env["CLEARCARD_AMQP_URL"], env["CLEARCARD_DATABASE_URL"] = service_urls(url, database_url)
        c = Cluster(env, direct, tmp_path, layout)
        c.env_for = {name: {"CLEARCARD_AMQP_URL": to(url)} for name, to in (amqp_url_for or {}).items()}
        for name, to in (database_url_for or {}).items():
            c.env_for = {**c.env_for, name: {**c.env_for.get(name, {}), "CLEARCARD_DATABASE_URL": to(database_url)}}
        # the signing keys exist before the services start together (migrations take a lock)
        c.token = (await cli(direct, "token", "issue", "--subject", "faults", "--role", "operator",
                             "--branch", BRANCH)).stdout.decode().strip()
        try:
            await c.start(*(name for name in layout if name not in set(deferred)))
            yield c, url
        finally:
            await c.stop_all()


@dataclass
class Requests:
    """Submits clear requests for BRANCH and follows their events."""

    bus: RabbitBus
    token: str
    follower: Follower
    sent: list[ClearRequest] = field(default_factory=list)

    async def submit(self, request: ClearRequest | None = None, **fields: Any) -> ClearRequest:
        """Publish a clear request (a new one for the whole branch unless given) straight to the broker."""
        if request is None:
            values: dict[str, Any] = {"request_id": f"fault-{uuid.uuid4().hex[:8]}", "branch_id": BRANCH,
                                      "period": "2026-10", **fields}
            request = ClearRequest.model_validate(values)
        self.follower.request_ids.add(request.request_id)
        if request not in self.sent:
            self.sent.append(request)
        with trio.fail_after(60):  # our own connection may be reconnecting after a broker outage
            while True:
                try:
                    await self.bus.publish(COMMANDS, CLEAR_REQUEST, encode(request), message_id=request.request_id,
                                           headers={"authorization": f"Bearer {self.token}"})
                    return request
                except BusError:
                    await trio.sleep(0.2)  # the bus reconnects by itself; no event tells us from here

    @property
    def first(self) -> ClearRequest:
        return self.sent[0]

    async def finish(self, request: ClearRequest, seconds: float = WAIT_FOR_FINISH_S) -> dict[str, Any]:
        """The request's `clear.finished` event; republishing it while none came (ours may be lost)."""
        with trio.move_on_after(seconds):
            while (finished := self.follower.finished(request.request_id)) is None:
                # an event published while our own connection was down is lost to us: the same
                # request again repeats no work, and a finished request answers with its final event
                with trio.move_on_after(10):
                    await self.follower.until(lambda _: self.follower.finished(request.request_id) is not None)
                if self.follower.finished(request.request_id) is None:
                    await self.submit(request)
            return finished
        raise AssertionError(f"request {request.request_id} did not finish within {seconds:g} s; "
                             f"steps seen: {self.follower.progress(request.request_id)}")


@asynccontextmanager
async def following(c: Cluster, url: str) -> AsyncIterator[Requests]:
    """A connection of the test's own to the broker, on which every `clear.*` event is followed."""
    follower = Follower(set())
    async with RabbitBus.connect(url, name="fault-test") as bus, trio.open_nursery() as nursery:
        queue = await bus.declare_reply_queue()
        await bus.bind(queue, EVENTS, "clear.*")
        await nursery.start(lambda task_status: bus.consume(queue, follower.on_delivery, task_status=task_status))
        yield Requests(bus, c.token, follower)
        nursery.cancel_scope.cancel()


async def show(env: Mapping[str, str], device_id: str) -> dict[str, Any]:
    """`clearcard emulator show DEVICE --json`."""
    shown: dict[str, Any] = json.loads((await cli(env, "emulator", "show", device_id, "--json")).stdout)
    return shown


async def assert_applied_once(env: Mapping[str, str], devices: Iterable[str] = DEVICES) -> None:
    """Each device shows exactly one report and one write-back per invoice type, all cleared."""
    shown: dict[str, dict[str, Any]] = {}

    async def one(device_id: str) -> None:
        shown[device_id] = await show(env, device_id)

    async with trio.open_nursery() as nursery:  # CLI start-ups overlap
        for device_id in devices:
            nursery.start_soon(one, device_id)
    for device_id, state in shown.items():
        types = DEVICES[device_id][2]
        assert sorted(w["invoice_type"] for w in state["writebacks"]) == sorted(types), (device_id, state)
        assert sorted(r["invoice_type"] for r in state["reports"]) == sorted(types), (device_id, state)
        assert set(state["status"].values()) == {2}, (device_id, state["status"])


async def assert_audit_verifies(env: Mapping[str, str]) -> None:
    """`clearcard audit verify` exits 0 with `ok N records`."""
    result = await cli(env, "audit", "verify", check=False)
    out = result.stdout.decode()
    assert result.returncode == 0 and out.startswith("ok "), (out, result.stderr.decode()[-2000:])


def assert_steps_in_order(follower: Follower, request_id: str, device_id: str) -> None:
    steps = follower.steps(request_id, device_id)
    # resumed steps may be announced again (same message id), but never out of order
    assert steps == sorted(steps, key=STEP_ORDER.index), steps
    assert steps[-1] == "verified", steps


async def assert_exactly_once(c: Cluster, requests: Requests) -> dict[str, Any]:
    """The verdict of every scenario: the first request succeeded, every other accepted request
    finished, nothing was applied twice and the audit chain verifies."""
    try:
        finished = await requests.finish(requests.first)
        assert finished["status"] == "succeeded", finished
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await diagnosis(c)}") from None
    assert {r["outcome"] for r in finished["results"]} == {"cleared"}, finished
    for request in requests.sent[1:]:
        await requests.finish(request)
    for device_id in DEVICES:
        assert_steps_in_order(requests.follower, requests.first.request_id, device_id)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(assert_applied_once, c.direct)
        nursery.start_soon(assert_audit_verifies, c.direct)
    return finished


async def diagnosis(c: Cluster) -> str:
    """What the database says about the clears, the unpublished outbox and every log's warnings."""
    lines = []
    try:
        with trio.fail_after(10):
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(c.direct["CLEARCARD_DATABASE_URL"])
            try:
                rows = await trio_asyncio.aio_as_trio(conn.fetch)(
                    "SELECT request_id, device_id, step, outcome, error_code, error_message, lease_owner,"
                    " lease_until, updated_at FROM device_clears ORDER BY request_id, device_id")
                lines += [f"device_clears: {dict(r)}" for r in rows]
                backlog = await trio_asyncio.aio_as_trio(conn.fetchval)(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL")
                lines.append(f"unpublished outbox rows: {backlog}")
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        lines.append(f"(database not readable: {exc!r})")
    for log in sorted(c.tmp.glob("*.log")):
        text = log.read_text(encoding="utf-8", errors="replace")
        noted = [line[:400] for line in text.splitlines()
                 if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line]
        lines.append(f"--- {log.name}: {len(noted)} warnings/errors")
        lines += noted[-15:]
    return "\n".join(lines)
