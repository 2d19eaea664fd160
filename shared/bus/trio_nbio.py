"""pika's non-blocking I/O interface (`nbio_interface`) on trio: a pika connection on the trio thread.

pika builds its own asyncio and select adapters from this interface plus the socket and
streaming mixins of `io_services_utils`; this module supplies the same on trio, so a pika
`BaseConnection` runs with no thread and no second event loop. Every watcher, timer and
name lookup is a task in the nursery the adapter is given, so closing that nursery ends
them all. pika invokes callbacks synchronously from those tasks: code in a callback must
not block, and hands work to trio with `send_nowait` or `Event.set`.

pika itself may raise from such a callback (its connector raises ValueError when a socket is
reset between connecting and `getpeername()`, as a proxy refusing connections does): that is the
connection failing, not a reason to end the I/O tasks' nursery and its owner with it, so it is
handed to `on_failure`, which fails the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import trio
from pika.adapters.base_connection import BaseConnection
from pika.adapters.utils import io_services_utils, nbio_interface


class TrioConnection(BaseConnection):
    """A pika connection whose I/O runs as tasks in a trio nursery."""

    def __init__(
        self,
        parameters: Any,
        on_open_callback: Callable[[Any], None],
        on_open_error_callback: Callable[[Any, BaseException], None],
        on_close_callback: Callable[[Any, BaseException], None],
        nursery: trio.Nursery,
        on_failure: Callable[[Exception], None],
    ) -> None:
        super().__init__(
            parameters,
            on_open_callback,
            on_open_error_callback,
            on_close_callback,
            TrioIOServices(nursery, on_failure),
            internal_connection_workflow=True,
        )

    @classmethod
    def create_connection(cls, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError("open a TrioConnection directly; it runs pika's own workflow")


class _Cancellable(nbio_interface.AbstractTimerReference, nbio_interface.AbstractIOReference):
    """A timer or lookup running as a task; cancelling it cancels the task."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = False

    def cancel(self) -> bool:
        if self.done or self.scope.cancel_called:
            return False
        self.scope.cancel()
        return True


class TrioIOServices(
    io_services_utils.SocketConnectionMixin,
    io_services_utils.StreamingConnectionMixin,
    nbio_interface.AbstractIOServices,
    nbio_interface.AbstractFileDescriptorServices,
):
    """`AbstractIOServices` on trio: fd watchers, timers and lookups are tasks in `nursery`."""

    def __init__(self, nursery: trio.Nursery, on_failure: Callable[[Exception], None]) -> None:
        self._nursery = nursery
        self._on_failure = on_failure
        self._token = trio.lowlevel.current_trio_token()
        self._readers: dict[int, tuple[trio.CancelScope, list[Callable[[], None]]]] = {}
        self._writers: dict[int, tuple[trio.CancelScope, list[Callable[[], None]]]] = {}

    def get_native_ioloop(self) -> trio.Nursery:
        return self._nursery

    def close(self) -> None:
        """Nothing to do: the nursery's owner ends the tasks."""

    def run(self) -> None:
        raise NotImplementedError("trio runs the loop")

    def stop(self) -> None:
        raise NotImplementedError("trio runs the loop")

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        self._token.run_sync_soon(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Cancellable:
        ref = _Cancellable()

        async def timer() -> None:
            with ref.scope:
                await trio.sleep(delay)
                ref.done = True
                self._call(callback)

        self._nursery.start_soon(timer)
        return ref

    def getaddrinfo(
        self,
        host: str,
        port: int,
        on_done: Callable[[Any], None],
        family: int = 0,
        socktype: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> _Cancellable:
        ref = _Cancellable()

        async def lookup() -> None:
            with ref.scope:
                try:
                    result: Any = await trio.socket.getaddrinfo(host, port, family, socktype, proto, flags)
                except (OSError, socket.gaierror) as exc:
                    result = exc
                ref.done = True
                self._call(on_done, result)

        self._nursery.start_soon(lookup)
        return ref

    # fd watchers: one task per watched direction, cancelled synchronously by remove_*, so the
    # fd is unregistered from trio before pika closes the socket.

    def set_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        self._watch(self._readers, fd, on_readable, trio.lowlevel.wait_readable)

    def remove_reader(self, fd: int) -> bool:
        return self._unwatch(self._readers, fd)

    def set_writer(self, fd: int, on_writable: Callable[[], None]) -> None:
        self._watch(self._writers, fd, on_writable, trio.lowlevel.wait_writable, optimistic=True)

    def remove_writer(self, fd: int) -> bool:
        return self._unwatch(self._writers, fd)

    def _watch(
        self,
        watchers: dict[int, tuple[trio.CancelScope, list[Callable[[], None]]]],
        fd: int,
        callback: Callable[[], None],
        wait: Callable[[int], Any],
        optimistic: bool = False,
    ) -> None:
        if fd in watchers:
            watchers[fd][1][0] = callback
            return
        scope = trio.CancelScope()
        slot = [callback]
        watchers[fd] = (scope, slot)

        async def watch() -> None:
            with scope:
                if optimistic:
                    # pika asks to write just after buffering data, when a socket is almost always
                    # writable: try once on the next tick, batching this tick's frames, before
                    # paying for a poll registration (pika handles EAGAIN itself)
                    await trio.lowlevel.checkpoint()
                    if not self._call(slot[0]):
                        return
                while not scope.cancel_called:
                    await wait(fd)
                    if not self._call(slot[0]):
                        return

        self._nursery.start_soon(watch)

    def _call(self, callback: Callable[..., None], *args: Any) -> bool:
        """Run a pika callback; False (and the connection failed) if pika raised from it."""
        try:
            callback(*args)
        except Exception as exc:
            self._on_failure(exc)
            return False
        return True

    @staticmethod
    def _unwatch(watchers: dict[int, tuple[trio.CancelScope, list[Callable[[], None]]]], fd: int) -> bool:
        entry = watchers.pop(fd, None)
        if entry is None:
            return False
        entry[0].cancel()
        return True
