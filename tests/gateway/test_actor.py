"""The device actor: order, deadlines, vanished devices; and hot-plug scanning. MockClock time."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from device_gateway.actor import DeviceActor
from device_gateway.hotplug import watch_presence
from shared.errors import ClearCardError, ErrorCode


class FakeDriver:
    """Records what ran; `gate` lets a test hold a command inside the worker thread."""

    family = "ukey"
    vendor_id = product_id = 0

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.opened = 0
        self.closed = 0
        self.is_open = False
        self.gate = threading.Event()
        self.gate.set()

    def set_deadline(self, deadline: float) -> None:
        self.deadline = deadline

    def open(self) -> None:
        self.opened += 1
        self.is_open = True

    def close(self) -> None:
        self.closed += 1
        self.is_open = False

    def step(self, name: str) -> str:
        assert self.gate.wait(10)
        self.ran.append(name)
        return name


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def with_actor(driver: FakeDriver, body: Any) -> None:
    actor = DeviceActor("661500000001", driver, trio.CapacityLimiter(4))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await body(actor)
        nursery.cancel_scope.cancel()


async def test_commands_run_in_arrival_order_one_at_a_time(clock: trio.testing.MockClock) -> None:
    driver = FakeDriver()

    async def body(actor: DeviceActor) -> None:
        results: list[str] = []

        async def send(name: str) -> None:
            results.append(await actor.call(name, lambda d: d.step(name)))

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(send, f"c{n}")
                await trio.testing.wait_all_tasks_blocked()
        assert driver.ran == ["c0", "c1", "c2", "c3", "c4"] == results
        assert driver.opened == 1

    await with_actor(driver, body)


async def test_a_command_past_its_deadline_never_starts_later(clock: trio.testing.MockClock) -> None:
    driver = FakeDriver()
    driver.gate.clear()  # the first command hangs inside the device

    async def body(actor: DeviceActor) -> None:
        async def send(name: str) -> None:
            with pytest.raises(trio.TooSlowError), trio.fail_after(5):
                await actor.call(name, lambda d: d.step(name))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, "slow")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, "queued")
        driver.gate.set()  # the device finally answers the first one
        assert await actor.call("next", lambda d: d.step("next")) == "next"
        assert driver.ran == ["slow", "next"]  # "queued" timed out waiting and was skipped

    await with_actor(driver, body)


async def test_a_vanished_device_fails_queued_commands_and_reopens(clock: trio.testing.MockClock) -> None:
    driver = FakeDriver()
    driver.gate.clear()

    def vanish(d: Any) -> None:
        assert d.gate.wait(10)
        raise ClearCardError(ErrorCode.DEVICE_OFFLINE, "gone")

    async def body(actor: DeviceActor) -> None:
        codes: list[ErrorCode] = []

        async def send(work: Any) -> None:
            try:
                await actor.call("cmd", work)
            except ClearCardError as exc:
                codes.append(exc.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, vanish)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(send, lambda d: d.step("never"))
            await trio.testing.wait_all_tasks_blocked()
            driver.gate.set()
        assert codes == [ErrorCode.DEVICE_OFFLINE] * 4
        assert driver.closed == 1 and "never" not in driver.ran
        assert await actor.call("again", lambda d: d.step("again")) == "again"
        assert driver.opened == 2

    await with_actor(driver, body)


async def test_a_full_mailbox_is_busy(clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    import device_gateway.actor as actor_module

    monkeypatch.setattr(actor_module, "MAILBOX_SIZE", 1)
    driver = FakeDriver()
    driver.gate.clear()

    async def body(actor: DeviceActor) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.call, "a", lambda d: d.step("a"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(actor.call, "b", lambda d: d.step("b"))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ClearCardError) as caught:
                await actor.call("c", lambda d: d.step("c"))
            assert caught.value.code is ErrorCode.DEVICE_BUSY
            driver.gate.set()

    await with_actor(driver, body)


async def test_periodic_scan_reports_plug_and_unplug(clock: trio.testing.MockClock) -> None:
    present = {"a", "b"}
    changes: list[tuple[set[str], set[str]]] = []
    send, receive = trio.open_memory_channel[tuple[set[str], set[str]]](10)

    async def on_change(appeared: set[str], vanished: set[str]) -> None:
        changes.append((appeared, vanished))
        await send.send((appeared, vanished))

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: watch_presence(
            lambda: set(present), on_change, interval=2.0, task_status=task_status))
        assert changes == [({"a", "b"}, set())]
        await receive.receive()
        # wait for each scan's report, not for clock time: scans run in a worker thread,
        # and the mock clock jumps ahead while one runs
        present.discard("a")
        assert await receive.receive() == (set(), {"a"})
        present.add("a")
        assert await receive.receive() == ({"a"}, set())
        await trio.sleep(10)  # nothing changes: nothing reported
        nursery.cancel_scope.cancel()
    assert changes == [({"a", "b"}, set()), (set(), {"a"}), ({"a"}, set())]
