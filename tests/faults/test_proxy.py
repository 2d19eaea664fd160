"""The fault proxy itself, against an echo server on loopback (no broker, no database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.faults.proxy import FaultProxy


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for chunk in stream:
            await stream.send_all(chunk)
    except trio.BrokenResourceError:
        pass


@pytest.fixture
async def proxy(nursery: trio.Nursery) -> AsyncIterator[FaultProxy]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, _echo, listeners)
    proxy = FaultProxy("127.0.0.1", listeners[0].socket.getsockname()[1])
    await nursery.start(proxy.serve)
    yield proxy


async def _roundtrip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    got = b""
    while len(got) < len(data):
        chunk = await stream.receive_some()
        if not chunk:
            break
        got += chunk
    return got


def test_url_points_at_the_proxy() -> None:
    proxy = FaultProxy.to_url("amqp://guest:guest@127.0.0.1/%2F")
    assert proxy.target == ("127.0.0.1", 5672)
    proxy.port = 4000
    assert proxy.url("amqp://guest:guest@127.0.0.1:5672/%2F") == "amqp://guest:guest@127.0.0.1:4000/%2F"
    assert proxy.url("postgresql://postgres@localhost/db") == "postgresql://postgres@127.0.0.1:4000/db"


async def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with trio.fail_after(5):
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
            assert await _roundtrip(stream, b"x" * 200_000) == b"x" * 200_000
            assert proxy.accepted == 1 and proxy.connections == 1


async def test_cut_closes_every_connection_and_new_ones_work(proxy: FaultProxy) -> None:
    with trio.fail_after(5):
        streams = [await trio.open_tcp_stream("127.0.0.1", proxy.port) for _ in range(3)]
        for stream in streams:
            assert await _roundtrip(stream, b"ping") == b"ping"
        assert await proxy.cut() == 3
        assert proxy.connections == 0
        for stream in streams:
            async with stream:
                with pytest.raises((trio.BrokenResourceError, OSError)):
                    await stream.send_all(b"after")
                    if not await stream.receive_some():
                        raise trio.BrokenResourceError("closed")
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as again:
            assert await _roundtrip(again, b"pong") == b"pong"


async def test_refused_connections_are_counted(proxy: FaultProxy) -> None:
    with trio.fail_after(5):
        proxy.refuse()
        for _ in range(2):
            async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
                with pytest.raises((trio.BrokenResourceError, OSError)):
                    await stream.send_all(b"hello")
                    if not await stream.receive_some():
                        raise trio.BrokenResourceError("closed")
        await proxy.refused_at_least(2)
        proxy.accept()
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
            assert await _roundtrip(stream, b"ok") == b"ok"


async def test_delay_applies_each_way(proxy: FaultProxy) -> None:
    proxy.delay = 0.15
    with trio.fail_after(5):
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
            started = trio.current_time()
            assert await _roundtrip(stream, b"slow") == b"slow"
            assert trio.current_time() - started >= 0.3


async def test_blackhole_holds_traffic_until_restored(proxy: FaultProxy) -> None:
    with trio.fail_after(5):
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
            assert await _roundtrip(stream, b"a") == b"a"
            proxy.blackhole()
            await stream.send_all(b"held")
            with trio.move_on_after(0.3) as waited:  # a bound on a negative: nothing may come through
                await stream.receive_some()
            assert waited.cancelled_caught
            proxy.restore()
            got = b""
            while len(got) < 4:
                got += await stream.receive_some()
            assert got == b"held"
