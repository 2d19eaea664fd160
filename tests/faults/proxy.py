"""A TCP proxy for fault tests: 127.0.0.1:<free port> -> a target, with faults on command.

Put it between the services and the broker or the database (point CLEARCARD_AMQP_URL or
CLEARCARD_DATABASE_URL at `proxy.url(...)`) and, mid-clear:

- `await proxy.cut()` closes every connection (a reset by default, as a dropped NAT entry or
  a restarted load balancer does) and returns once they are all gone;
- `proxy.refuse()` / `proxy.accept()` close new connections at once while refusing, and
  `await proxy.refused_at_least(n)` waits until clients have tried `n` times;
- `proxy.delay = 0.2` adds latency to every chunk in both directions (order is kept;
  throughput is not capped);
- `proxy.blackhole()` / `proxy.restore()` hold all traffic (nothing is lost: TCP would
  retransmit after a route came back) and new connections are held before reaching the target;
- `proxy.cut_after(b"...")` cuts every connection right after forwarding the first chunk
  from a client that contains those bytes (say, a reply): what the client sends next (its
  ack) never arrives, a race made deterministic.

Nothing here sleeps to wait for something: waits are on events and counters.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import trio

_CHUNK = 65536
_BUFFERED_CHUNKS = 64


@dataclass(eq=False)
class _Connection:
    client: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closed: trio.Event = field(default_factory=trio.Event)
    upstream: trio.SocketStream | None = None
    reset: bool = False


class FaultProxy:
    """Forwards TCP connections to (host, port); see the module docstring for the faults."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.delay = 0.0
        self.accepted = 0
        self.refused = 0
        self._connections: set[_Connection] = set()
        self._refusing = False
        self._blackholed = False
        self._restored = trio.Event()
        self._counted = trio.Event()
        self._trigger: bytes | None = None
        self.triggered = trio.Event()

    @classmethod
    def to_url(cls, url: str) -> FaultProxy:
        """A proxy for the host and port of a URL (amqp://..., postgresql://...)."""
        parts = urlsplit(url)
        default = {"amqp": 5672, "amqps": 5671, "postgresql": 5432, "postgres": 5432}.get(parts.scheme, 0)
        return cls(parts.hostname or "127.0.0.1", parts.port or default)

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = (f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        return len(self._connections)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port (given to `nursery.start`) and forward until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    # --- faults ------------------------------------------------------------------------------

    async def cut(self, *, reset: bool = True) -> int:
        """Close every open connection on both sides; returns how many there were."""
        connections = list(self._connections)
        for connection in connections:
            connection.reset = reset
            connection.scope.cancel()
        for connection in connections:
            await connection.closed.wait()
        return len(connections)

    def _cut_now(self) -> None:
        """Reset every connection without waiting (from inside a pump: nothing more is forwarded)."""
        for connection in list(self._connections):
            connection.reset = True
            connection.scope.cancel()
        self.triggered.set()

    def refuse(self) -> None:
        """Close each new connection at once until `accept()`."""
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    async def refused_at_least(self, count: int) -> None:
        """Wait until `count` connections in all were refused."""
        while self.refused < count:
            await self._counted.wait()

    async def accepted_at_least(self, count: int) -> None:
        """Wait until `count` connections in all were forwarded."""
        while self.accepted < count:
            await self._counted.wait()

    def cut_after(self, pattern: bytes) -> None:
        """Once: cut every connection right after a client's chunk containing `pattern` is forwarded."""
        self._trigger = pattern

    def blackhole(self) -> None:
        """Hold every byte in both directions, and every new connection, until `restore()`."""
        if not self._blackholed:
            self._blackholed = True
            self._restored = trio.Event()

    def restore(self) -> None:
        self._blackholed = False
        self._restored.set()

    # --- forwarding --------------------------------------------------------------------------

    def _count(self, refused: bool) -> None:
        if refused:
            self.refused += 1
        else:
            self.accepted += 1
        counted, self._counted = self._counted, trio.Event()
        counted.set()

    async def _gate(self) -> None:
        while self._blackholed:
            await self._restored.wait()

    async def _handle(self, client: trio.SocketStream) -> None:
        connection = _Connection(client)
        if self._refusing:
            self._count(refused=True)
            _abort(client)
            await client.aclose()
            return
        self._connections.add(connection)
        try:
            with connection.scope:
                await self._gate()
                try:
                    connection.upstream = await trio.open_tcp_stream(*self.target)
                except OSError:
                    connection.reset = True
                    return
                self._count(refused=False)
                async with trio.open_nursery() as nursery:
                    done = nursery.cancel_scope.cancel
                    nursery.start_soon(self._pump, client, connection.upstream, done, True)
                    nursery.start_soon(self._pump, connection.upstream, client, done, False)
        finally:
            with trio.CancelScope(shield=True):
                for stream in (client, connection.upstream):
                    if stream is not None:
                        if connection.reset:
                            _abort(stream)
                        await stream.aclose()
            self._connections.discard(connection)
            connection.closed.set()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, done: Callable[[], None],
                    from_client: bool) -> None:
        """One direction: chunks are read as they come and written once their delay has passed."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](_BUFFERED_CHUNKS)

        async def read() -> None:
            async with send:
                try:
                    while chunk := await source.receive_some(_CHUNK):
                        await send.send((trio.current_time() + self.delay, chunk))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        async def write() -> None:
            async with receive:
                try:
                    async for due, chunk in receive:
                        await trio.sleep_until(due)
                        await self._gate()
                        await sink.send_all(chunk)
                        if from_client and self._trigger is not None and self._trigger in chunk:
                            self._trigger = None
                            self._cut_now()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(write)
        finally:
            done()  # one side ended: the connection ends, as a proxy's would


def _abort(stream: trio.SocketStream) -> None:
    """Make the coming close a reset (RST) instead of an orderly FIN."""
    with contextlib.suppress(OSError):  # already closed by the peer
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
