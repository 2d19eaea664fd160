"""The trio adapter of pika's I/O interface: pika raising from a callback fails the connection only."""

from __future__ import annotations

import socket

import trio
import trio.testing

from shared.bus.trio_nbio import TrioIOServices


async def test_an_exception_raised_by_a_pika_callback_fails_the_connection_not_the_nursery() -> None:
    failures: list[Exception] = []
    calls: list[str] = []
    left, right = socket.socketpair()
    left.setblocking(False)
    try:
        async with trio.open_nursery() as nursery:
            io = TrioIOServices(nursery, failures.append)

            def on_readable() -> None:
                calls.append("read")
                # what pika's connector does when a reset beat its getpeername()
                raise ValueError("Expected connected socket, but getpeername() failed")

            io.set_reader(left.fileno(), on_readable)
            io.call_later(0, lambda: calls.append("timer"))
            right.send(b"x")
            with trio.fail_after(5):
                while not failures:
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.sleep(0.01)  # the socket's readiness comes from the kernel
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    finally:
        left.close()
        right.close()
    assert [type(f) for f in failures] == [ValueError]
    assert calls.count("read") == 1 and "timer" in calls  # the watcher stopped; nothing else did
