"""Running `clearcard` as separate processes against real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import trio

from tests.conftest import AMQP_URL, missing

CLEARCARD = [sys.executable, "-m", "clearcard"]


async def rabbitmqctl(*args: str) -> None:
    await trio.run_process(["rabbitmqctl", "-q", *args], capture_stdout=True, capture_stderr=True)


@asynccontextmanager
async def fresh_vhost() -> AsyncIterator[str]:
    """An AMQP URL on a fresh vhost (guest may use it), deleted afterwards."""
    parts = urlsplit(AMQP_URL)
    try:
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 5672)
        await stream.aclose()
    except (OSError, trio.TooSlowError):
        missing(f"RabbitMQ at {AMQP_URL}", "rabbitmq-server -detached")
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl", "install rabbitmq-server")
    name = f"cc-e2e-{uuid.uuid4().hex[:10]}"
    await rabbitmqctl("add_vhost", name)
    try:
        await rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield AMQP_URL.rsplit("/", 1)[0] + "/" + quote(name, safe="")
    finally:
        with trio.CancelScope(shield=True):
            await rabbitmqctl("delete_vhost", name)


def environment(data_dir: Path, amqp_url: str, database_url: str, fleet: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(data_dir), CLEARCARD_AMQP_URL=amqp_url,
               CLEARCARD_DATABASE_URL=database_url, CLEARCARD_FLEET=str(fleet),
               CLEARCARD_LOG_LEVEL="INFO", CLEARCARD_HTTP="127.0.0.1:0")  # console on a free port
    return env


async def cli(env: Mapping[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run one `clearcard` command to completion."""
    with trio.fail_after(60):
        return await trio.run_process([*CLEARCARD, *args], env=dict(env), capture_stdout=True,
                                      capture_stderr=True, check=check)


@asynccontextmanager
async def serving(env: Mapping[str, str], *services: str, log: Path) -> AsyncIterator[trio.Process]:
    """`clearcard serve ...` in its own process, ready once it says so; SIGTERM at the end."""
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process([*CLEARCARD, "serve", *services], env=dict(env),
                                                   stdout=sink, stderr=sink)
        try:
            with trio.fail_after(60):
                while b"serving" not in await trio.Path(log).read_bytes():
                    if process.poll() is not None:
                        text = await trio.Path(log).read_text()
                        raise AssertionError(f"serve exited early:\n{text[-3000:]}")
                    await trio.sleep(0.1)  # polling a child's log: there is no event to wait on
            yield process
        finally:
            with trio.CancelScope(shield=True):
                if process.poll() is None:
                    process.terminate()
                    with trio.move_on_after(20):
                        await process.wait()
                    if process.poll() is None:
                        process.kill()
                        await process.wait()
