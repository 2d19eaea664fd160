"""One task per device owns its driver (and USB handle); commands run one at a time, in order.

Callers put a job in the device's mailbox and wait for its outcome until the job's deadline.
The actor runs each job's pyusb calls in a worker thread of its own (a limiter of one by
default), never two at once for one device: no device waits for a thread another device's slow
command holds, so concurrency across devices is bound by nothing but the host.
A job whose caller already gave up (deadline passed) is skipped, so a command reported as
TIMEOUT never starts later. A vanished device fails every queued job with DEVICE_OFFLINE and
is opened again by the next job or by the gateway's periodic scan (hot-plug).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import outcome
import structlog
import trio

from device_gateway.drivers.base import DeviceDriver
from shared.errors import ClearCardError, ErrorCode

log = structlog.get_logger("clearcard.gateway")

T = TypeVar("T")
MAILBOX_SIZE = 64  # more waiting commands than this for one device: refused as busy
DEFAULT_DEADLINE_S = 120.0


@dataclass(eq=False)
class _Job(Generic[T]):
    label: str
    work: Callable[[DeviceDriver], T]
    deadline: float  # trio clock
    reply: trio.MemorySendChannel[outcome.Outcome[T]]
    needs_handle: bool = True
    abandoned: bool = False

    def answer(self, result: outcome.Outcome[T]) -> None:
        # the caller may be gone; then nobody waits for this answer
        with contextlib.suppress(trio.BrokenResourceError, trio.WouldBlock, trio.ClosedResourceError):
            self.reply.send_nowait(result)


def _offline(device_id: str) -> ClearCardError:
    return ClearCardError(ErrorCode.DEVICE_OFFLINE,
                          f"device {device_id} was disconnected before the command ran")


class DeviceActor:
    """The single owner of one device's driver; run it with `nursery.start(actor.run)`."""

    def __init__(self, device_id: str, driver: DeviceDriver, limiter: trio.CapacityLimiter | None = None) -> None:
        self.device_id = device_id
        self._driver = driver
        self._limiter = limiter or trio.CapacityLimiter(1)  # one worker thread per device
        self._send, self._receive = trio.open_memory_channel[_Job[Any]](MAILBOX_SIZE)

    async def call(self, label: str, work: Callable[[DeviceDriver], T], *,
                   needs_handle: bool = True) -> T:
        """Run `work(driver)` in this device's turn, within the caller's deadline (`trio.fail_after`).

        The caller's deadline also bounds every pyusb transfer of the job; without one a job
        gets DEFAULT_DEADLINE_S so a worker thread always comes back.
        """
        deadline = trio.current_effective_deadline()
        if not math.isfinite(deadline):
            deadline = trio.current_time() + DEFAULT_DEADLINE_S
        send, receive = trio.open_memory_channel[outcome.Outcome[T]](1)
        job = _Job(label, work, deadline, send, needs_handle)
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            raise ClearCardError(ErrorCode.DEVICE_BUSY,
                                 f"too many commands are waiting for device {self.device_id}") from None
        except trio.ClosedResourceError:
            raise ClearCardError(ErrorCode.UNKNOWN_DEVICE,
                                 f"device {self.device_id} was taken out of service") from None
        result: outcome.Outcome[T] | None = None
        try:
            result = await receive.receive()
        finally:
            if result is None:
                job.abandoned = True  # timed out or cancelled: it must not start later
        return result.unwrap()

    async def release(self) -> None:
        """Ask the actor to close the handle (the device vanished); does not wait for it."""
        job: _Job[None] = _Job("release", lambda d: d.close(), math.inf,
                               trio.open_memory_channel[outcome.Outcome[None]](1)[0], needs_handle=False)
        # a full queue of commands: the next failing transfer closes the handle anyway
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(job)
        await trio.lowlevel.checkpoint()

    def retire(self) -> None:
        """No more commands: the ones already queued run, then the handle is closed and `run` returns."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until cancelled; the handle is closed on the way out."""
        task_status.started()
        try:
            async for job in self._receive:
                if job.abandoned or trio.current_time() >= job.deadline:
                    job.answer(outcome.Error(ClearCardError(
                        ErrorCode.TIMEOUT, f"{job.label} for device {self.device_id} expired in the queue")))
                    continue
                result = await self._execute(job)
                job.answer(result)
                if isinstance(result, outcome.Error):
                    await self._after_failure(result.error)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._driver.close, limiter=self._limiter)

    async def _execute(self, job: _Job[T]) -> outcome.Outcome[T]:
        remaining = job.deadline - trio.current_time()
        driver = self._driver

        def work() -> T:
            # the deadline travels into every pyusb timeout, so the thread always comes back
            driver.set_deadline(time.monotonic() + remaining if math.isfinite(remaining) else math.inf)
            if job.needs_handle and not driver.is_open:
                driver.open()
            return job.work(driver)

        return await trio.to_thread.run_sync(outcome.capture, work, limiter=self._limiter)

    async def _after_failure(self, error: BaseException) -> None:
        code = error.code if isinstance(error, ClearCardError) else None
        if code is not None and code not in (ErrorCode.DEVICE_OFFLINE, ErrorCode.INTERNAL):
            return  # a refusal, a timeout or busy: the handle is still good
        await trio.to_thread.run_sync(self._driver.close, limiter=self._limiter)
        if code is ErrorCode.DEVICE_OFFLINE:
            failed = 0
            while True:
                try:
                    queued = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):  # empty, or retired and drained
                    break
                if queued.needs_handle:
                    queued.answer(outcome.Error(_offline(self.device_id)))
                    failed += 1
            if failed:
                log.warning("device vanished; queued commands failed", device_id=self.device_id,
                            failed=failed)
        else:
            log.error("device command failed unexpectedly; handle closed", device_id=self.device_id,
                      error=repr(error))
