"""One AMQP connection on the trio thread, with awaitable wrappers around pika's callback API.

pika reports the end of an operation through a callback and forgets waiters when a channel
or connection closes; here every wait belongs to its channel or connection and fails with
`BusError` when that closes, so nothing hangs on a dead channel. pika exceptions become
`BusError` at this edge.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pika
import pika.exceptions
import structlog
import trio
from pika import spec

from shared.bus.api import BusError
from shared.bus.tls import explain as explain_tls
from shared.bus.trio_nbio import TrioConnection

log = structlog.get_logger("clearcard.bus")


def describe(reason: BaseException | None) -> str:
    """A closing reason in a few words: `320 CONNECTION_FORCED - ...`."""
    code = getattr(reason, "reply_code", None)
    text = getattr(reason, "reply_text", None)
    if code is not None:
        return f"{code} {text}"
    return repr(reason)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn pika's exceptions into BusError."""
    try:
        yield
    except pika.exceptions.AMQPError as exc:
        raise BusError(f"{what}: {describe(exc)}") from exc


class Waiter:
    """The outcome of one pika operation, resolved or failed exactly once from a callback."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: Any = None
        self._error: BusError | None = None

    def resolve(self, result: Any = None) -> None:
        if not self._done.is_set():
            self._result = result
            self._done.set()

    def fail(self, error: BusError) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise BusError(str(self._error)) from self._error
        return self._result


class _Closable:
    """Waiters and hooks that fail or run once when the underlying channel/connection closes."""

    def __init__(self) -> None:
        self.closed = trio.Event()
        self.close_error: BusError | None = None
        self._waiters: set[Waiter] = set()
        self._hooks: list[Callable[[BusError], None]] = []

    def on_close(self, hook: Callable[[BusError], None]) -> None:
        self._hooks.append(hook)

    def _closed_by(self, error: BusError) -> None:
        if self.closed.is_set():
            return
        self.close_error = error
        self.closed.set()
        for waiter in list(self._waiters):
            waiter.fail(error)
        for hook in self._hooks:
            hook(error)

    async def _await(self, what: str, start: Callable[[Waiter], object]) -> Any:
        if self.close_error is not None:
            raise BusError(f"{what}: {self.close_error}")
        waiter = Waiter()
        self._waiters.add(waiter)
        try:
            with translated(what):
                start(waiter)
            return await waiter.wait()
        finally:
            self._waiters.discard(waiter)


class Channel(_Closable):
    """A pika channel whose RPCs are awaitable and fail with BusError once it closes."""

    def __init__(self, channel: Any) -> None:
        super().__init__()
        self.pika = channel
        channel.add_on_close_callback(
            lambda _ch, reason: self._closed_by(BusError(f"channel closed: {describe(reason)}"))
        )

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set() and bool(self.pika.is_open)

    async def call(self, method: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
        """Run a pika channel method with a `callback=` and return what the callback got."""
        name = getattr(method, "__name__", "call")
        return await self._await(name, lambda w: method(*args, callback=w.resolve, **kwargs))

    def close(self) -> None:
        if self.is_open:
            with translated("channel.close"):
                self.pika.close()


class Publisher:
    """A channel in confirm mode: each publish awaits its own confirm, many in flight."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._next_tag = 1
        self._pending: OrderedDict[int, Waiter] = OrderedDict()
        channel.on_close(self._fail_pending)

    @classmethod
    async def open(cls, link: Link) -> Publisher:
        publisher = cls(await link.open_channel())
        await publisher.channel.call(publisher.channel.pika.confirm_delivery, publisher._on_confirm)
        return publisher

    def send(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> tuple[int, Waiter]:
        """Hand a message to pika; returns its delivery tag and the waiter for its confirm."""
        if not self.channel.is_open:
            raise BusError(f"publish: {self.channel.close_error or 'channel closed'}")
        with translated("publish"):
            self.channel.pika.basic_publish(exchange, routing_key, body, properties)
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        waiter = self._pending[tag] = Waiter()
        return tag, waiter

    def forget(self, tag: int) -> None:
        """The publisher stopped waiting (cancelled): the message may or may not be taken."""
        self._pending.pop(tag, None)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            settled = []
            while self._pending and next(iter(self._pending)) <= method.delivery_tag:
                settled.append(self._pending.popitem(last=False)[1])
        else:
            one = self._pending.pop(method.delivery_tag, None)
            settled = [one] if one is not None else []
        for waiter in settled:
            if isinstance(method, spec.Basic.Ack):
                waiter.resolve()
            else:
                waiter.fail(BusError("the broker refused the message (nack)"))

    def _fail_pending(self, error: BusError) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for waiter in pending.values():
            waiter.fail(BusError(f"unconfirmed publish: {error}"))


class Link(_Closable):
    """One open pika connection; its channels close with it."""

    def __init__(self) -> None:
        super().__init__()
        self.connection: Any = None
        self._publisher: Publisher | None = None
        self._publisher_lock = trio.Lock()
        self._plain: Channel | None = None  # a channel not in confirm mode, for RPC replies

    async def open_channel(self) -> Channel:
        holder: list[Channel] = []

        def start(waiter: Waiter) -> None:
            channel = Channel(self.connection.channel(on_open_callback=waiter.resolve))
            channel.on_close(waiter.fail)
            holder.append(channel)

        try:
            await self._await("channel.open", start)
        except BaseException:
            if holder:
                with translated("channel.close"):
                    holder[0].close()
            raise
        return holder[0]

    async def publisher(self) -> Publisher:
        """The confirm-mode channel, reopened if the broker closed it (say, a publish to a missing exchange)."""
        publisher = self._publisher
        if publisher is not None and publisher.channel.is_open:
            return publisher
        async with self._publisher_lock:
            if self._publisher is None or not self._publisher.channel.is_open:
                self._publisher = await Publisher.open(self)
            return self._publisher


    async def send_unconfirmed(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        """Hand a message to pika on a channel without confirms (the broker sends none back)."""
        plain = self._plain
        if plain is None or not plain.is_open:
            async with self._publisher_lock:
                if self._plain is None or not self._plain.is_open:
                    self._plain = await self.open_channel()
                plain = self._plain
        if not plain.is_open:
            raise BusError(f"publish: {plain.close_error or 'channel closed'}")
        with translated("publish"):
            plain.pika.basic_publish(exchange, routing_key, body, properties)


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone exception comes out as itself, not as a one-member group."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


HANDSHAKE_TIMEOUT = 10.0


@asynccontextmanager
async def open_link(parameters: pika.ConnectionParameters) -> AsyncIterator[Link]:
    """Connect; on exit close the connection (bounded) and end its I/O tasks."""
    link = Link()
    async with open_nursery() as nursery:
        io, io_scope = await nursery.start(_run_io)
        opened = Waiter()
        ended = trio.Event()  # the socket is closed: failed to open, or closed after opening

        def on_open_error(_conn: Any, exc: BaseException) -> None:
            opened.fail(BusError(f"cannot connect to RabbitMQ: {explain_tls(exc) or describe(exc)}"))
            ended.set()

        def on_close(_conn: Any, reason: BaseException) -> None:
            link._closed_by(BusError(f"connection closed: {describe(reason)}"))
            ended.set()

        def on_failure(exc: Exception) -> None:  # pika raised from one of its own callbacks
            log.warning("RabbitMQ connection failed inside pika", error=repr(exc))
            error = BusError(f"connection failed: {exc!r}")
            opened.fail(error)
            link._closed_by(error)
            ended.set()

        link.connection = TrioConnection(parameters, opened.resolve, on_open_error, on_close, nursery=io,
                                         on_failure=on_failure)
        try:
            try:
                # a broker (or proxy) that accepts the TCP connection but never finishes the AMQP
                # handshake must not hang the reconnect loop forever
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    await opened.wait()
            except trio.TooSlowError:
                raise BusError(f"RabbitMQ did not complete the handshake within {HANDSHAKE_TIMEOUT:g} s") from None
            yield link
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                conn = link.connection
                if not (conn.is_closed or conn.is_closing) and not ended.is_set():
                    with contextlib.suppress(BusError), translated("connection.close"):
                        conn.close()
                if conn.is_closing and not ended.is_set():
                    await ended.wait()
            io_scope.cancel()


async def _run_io(task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]]) -> None:
    """pika's I/O tasks, shielded so that a cancelled owner can still close the connection cleanly;
    the owner cancels the returned scope once the connection is closed."""
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as io:
            task_status.started((io, scope))
            await trio.sleep_forever()
