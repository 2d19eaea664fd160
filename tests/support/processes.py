"""Running `clearcard` as separate processes against real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

CLEARCARD = [sys.executable, "-m", "clearcard"]


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
async def serving(env: Mapping[str, str], *services: str, log: Path, ready_within: float = 60,
                  command: Sequence[str] = CLEARCARD, cwd: Path | None = None,
                  ready: bytes = b"serving") -> AsyncIterator[trio.Process]:
    """`clearcard serve ...` in its own process, ready once its log shows `ready`; SIGTERM at the end.

    `command` is how to run `clearcard` (this interpreter's by default; an installed one)."""
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process([*command, "serve", *services], env=dict(env), cwd=cwd,
                                                   stdout=sink, stderr=sink)
        try:
            with trio.fail_after(ready_within):
                while ready not in await trio.Path(log).read_bytes():
                    if process.poll() is not None:
                        text = await trio.Path(log).read_text()
                        raise AssertionError(f"serve {list(services)} exited early:\n{text[-3000:]}")
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
