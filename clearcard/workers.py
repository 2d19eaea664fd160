"""`clearcard serve --workers N`: the same services in N processes, so a host's every core works.

One Python process computes on one core at a time (one trio thread, the GIL), while the broker
and PostgreSQL beside it leave the other cores partly idle. The services are stateless workers
behind RabbitMQ queues and PostgreSQL leases, so N copies of a process share its queues' work
with no further coordination. Two exceptions run in the first worker only: the gateway owns the
host's USB devices (one process may claim a device; more gateway replicas go on other hosts, or
as shards, docs/device-protocol.md) and the console owns its HTTP port.

The parent serves nothing itself. It starts the workers, passes their output through, restarts
a worker that exits (after a pause that grows while it keeps failing, so a worker that cannot
start does not spin) and on SIGTERM or SIGINT stops them all: SIGTERM, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import structlog
import trio

log = structlog.get_logger("clearcard.workers")

ONCE_PER_HOST = ("gateway", "console")  # they own the host's devices and the HTTP port
GRACE_S = 30.0  # what a worker gets to finish its in-flight work after SIGTERM
RESTART_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)
STEADY_S = 60.0  # a worker that ran this long before exiting starts again without a pause


class WorkerCannotStart(Exception):
    """A worker exited before it ever served: as `serve` alone would, the whole command ends."""

    def __init__(self, worker: int, exit_code: int) -> None:
        super().__init__(f"worker {worker} exited with status {exit_code} before serving")
        self.exit_code = exit_code


def plan(names: Sequence[str], workers: int) -> list[list[str]]:
    """The services of each worker: all of `names` in the first, the multipliable ones in the rest."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    rest = [n for n in names if n not in ONCE_PER_HOST]
    if workers > 1 and not rest:
        raise ValueError(f"{' and '.join(names)} run once per host: --workers has nothing to multiply "
                         "(add the gateway's replicas on other hosts or as shards)")
    return [list(names)] + [rest] * (workers - 1)


def command(names: Sequence[str]) -> list[str]:
    """How a worker is started: this interpreter's `clearcard serve` with one worker."""
    return [sys.executable, "-m", "clearcard", "serve", *names]


async def supervise(plans: Sequence[Sequence[str]]) -> None:
    """Run one process per plan until SIGTERM or SIGINT; says so, with their pids, once all serve."""
    environ = dict(os.environ)
    ready = [trio.Event() for _ in plans]
    pids: list[int] = [0] * len(plans)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for k, names in enumerate(plans):
                nursery.start_soon(_keep_running, k, list(names), environ, ready[k], pids)
            for event in ready:
                await event.wait()
            print(f"serving {', '.join(plans[0])} in {len(plans)} workers (pids {', '.join(map(str, pids))})",
                  file=sys.stderr, flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


async def _keep_running(k: int, names: list[str], env: dict[str, str], ready: trio.Event, pids: list[int]) -> None:
    """Worker `k`: start it, and start it again whenever it exits, until cancelled.

    A worker that never served (bad configuration, a missing database) is not retried: every
    restart would fail the same way, so the command ends with its status, as `serve` would."""
    failures = 0
    while True:
        started = time.monotonic()
        code = await _one_run(k, names, env, ready, pids)
        if not ready.is_set():
            raise WorkerCannotStart(k, code)
        failures = 0 if time.monotonic() - started >= STEADY_S else failures + 1
        pause = RESTART_PAUSES[min(failures, len(RESTART_PAUSES)) - 1] if failures else 0.0
        log.warning("worker exited; starting it again", worker=k, services=names, exit_code=code, pause_s=pause)
        await trio.sleep(pause)


async def _one_run(k: int, names: list[str], env: dict[str, str], ready: trio.Event, pids: list[int]) -> int:
    """One life of worker `k`: its output passed through, stopped gently when cancelled."""
    # its own session: a terminal's Ctrl-C reaches the parent alone, which stops the workers in order
    process = await trio.lowlevel.open_process(command(names), env=env, stdout=None, stderr=subprocess.PIPE,
                                               start_new_session=True)
    pids[k] = process.pid
    try:
        assert process.stderr is not None
        async for line in _lines(process.stderr):
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
            if line.startswith(b"serving "):
                ready.set()
        return await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: trio.Process) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(GRACE_S):
        await process.wait()
    if process.poll() is None:
        process.kill()
        await process.wait()


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    pending = b""
    while chunk := await stream.receive_some(65536):
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if pending:
        yield pending
