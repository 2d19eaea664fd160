"""`clearcard serve --workers N`: the services in N processes sharing the queues' work, a worker
that dies started again, SIGTERM stopping them all, and what cannot be multiplied refused."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import trio

from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.plain_amqp import plain_client_clear
from tests.support.processes import CLEARCARD, cli, environment
from tests.support.vhosts import fresh_vhost

pytestmark = pytest.mark.rabbitmq
SUMMARY = re.compile(rb"serving .* in (\d+) workers \(pids ([\d, ]+)\)")


async def consumers(url: str, queue: str) -> int:
    vhost = unquote(urlsplit(url).path[1:])
    done = await trio.run_process(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers",
                                   "--formatter", "json"], capture_stdout=True)
    return next((q["consumers"] for q in json.loads(done.stdout) if q["name"] == queue), 0)


async def settles_at(url: str, queue: str, expected: int, within: float = 60) -> None:
    """The broker's consumer count for a quorum queue is refreshed with its statistics (every
    few seconds), so it is polled until it reaches `expected`."""
    with trio.move_on_after(within):
        while await consumers(url, queue) != expected:  # noqa: ASYNC110 - the broker: nothing to wait on
            await trio.sleep(0.5)
    assert await consumers(url, queue) == expected, queue


async def wait_for(log: Path, pattern: re.Pattern[bytes], after: int = 0, within: float = 90) -> re.Match[bytes]:
    with trio.fail_after(within):
        while (found := pattern.search((await trio.Path(log).read_bytes())[after:])) is None:  # noqa: ASYNC110
            await trio.sleep(0.2)  # a child's log: there is no event to wait on
    return found


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_work_and_stop_together(tmp_path: Path, database_url: str) -> None:
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with fresh_vhost() as url:
        env = environment(tmp_path / "data", url, database_url, fleet)
        token = (await cli(env, "token", "issue", "--subject", "erp", "--role", "requester",
                           "--branch", BRANCH)).stdout.decode().strip()
        log = tmp_path / "serve.log"
        with log.open("wb") as sink:
            parent = await trio.lowlevel.open_process([*CLEARCARD, "serve", "all", "--workers", "2"], env=env,
                                                      stdout=sink, stderr=sink)
            try:
                found = await wait_for(log, SUMMARY)
                assert found.group(1) == b"2"
                first, second = (int(p) for p in found.group(2).split(b","))
                # both workers consume the coordinator's and auth's queues; the gateway's only once
                await settles_at(url, "clearcard.coordinator.requests", 2)
                await settles_at(url, "clearcard.auth.requests", 2)
                await settles_at(url, "clearcard.gateway.default", 1)

                body = {"request_id": f"erp-{uuid.uuid4().hex[:8]}", "branch_id": BRANCH, "period": "2026-10"}
                events, _, _ = await trio.to_thread.run_sync(plain_client_clear, url, body, token, None)
                assert events[-1]["event"] == "clear.finished" and events[-1]["status"] == "succeeded", events[-1]

                seen = len(await trio.Path(log).read_bytes())
                os.kill(second, signal.SIGKILL)  # a worker dies: the parent starts another
                await wait_for(log, re.compile(rb"worker exited; starting it again"), after=seen)
                await wait_for(log, re.compile(rb"\nserving "), after=seen)  # the new worker is up
                workers = children(parent.pid)
                assert len(workers) == 2 and first in workers and second not in workers

                parent.send_signal(signal.SIGTERM)
                with trio.fail_after(60):
                    code = await parent.wait()
                assert code == 0, (await trio.Path(log).read_text())[-3000:]
                assert not alive(first)
                await settles_at(url, "clearcard.coordinator.requests", 0)
            finally:
                with trio.CancelScope(shield=True):
                    if parent.poll() is None:
                        parent.kill()
                        await parent.wait()


async def test_what_cannot_be_multiplied_is_refused(tmp_path: Path, database_url: str) -> None:
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    env = environment(tmp_path / "data", "amqp://guest:guest@127.0.0.1:5672/%2F", database_url, fleet)
    alone = await cli(env, "serve", "gateway", "console", "--workers", "2", check=False)
    assert alone.returncode == 2
    assert "run once per host" in alone.stderr.decode()

    embedded = {k: v for k, v in env.items() if k not in ("CLEARCARD_AMQP_URL", "CLEARCARD_DATABASE_URL")}
    refused = await cli(embedded, "serve", "coordinator", "--workers", "3", check=False)
    assert refused.returncode == 2
    assert "--workers needs CLEARCARD_AMQP_URL and CLEARCARD_DATABASE_URL" in refused.stderr.decode()


async def test_a_worker_that_cannot_start_ends_the_command(tmp_path: Path) -> None:
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    # nothing listens on port 1: the workers cannot reach their database and never serve
    env = environment(tmp_path / "data", "amqp://guest:guest@127.0.0.1:5672/%2F",
                      "postgresql://postgres@127.0.0.1:1/none", fleet)
    with trio.fail_after(120):
        done = await trio.run_process([*CLEARCARD, "serve", "auth", "--workers", "2"], env=env,
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode != 0
    assert b"before serving" in done.stderr
