"""A clear request from a plain AMQP client (pika, not ClearCard's code) through separately
running services on real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import pytest
import trio

from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.plain_amqp import plain_client_clear
from tests.support.processes import cli, environment, serving
from tests.support.vhosts import fresh_vhost

pytestmark = pytest.mark.rabbitmq
STEPS = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
         "declaration_checked", "written_back", "verified"]


async def test_plain_amqp_client_clears_two_families(tmp_path: Path, database_url: str) -> None:
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with fresh_vhost() as url:
        env = environment(tmp_path / "data", url, database_url, fleet)
        token = (await cli(env, "token", "issue", "--subject", "erp", "--role", "requester",
                           "--branch", BRANCH)).stdout.decode().strip()
        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        body = {"request_id": f"erp-{uuid.uuid4().hex[:8]}", "branch_id": BRANCH, "period": "2026-10",
                "mode": "auto", "future_field": "ignored"}
        async with serving(env, "all", log=tmp_path / "serve.log"):
            events, replied, correlation = await trio.to_thread.run_sync(
                plain_client_clear, url, body, token, traceparent)
            shown = json.loads((await cli(env, "emulator", "show", "661500000001", "--json")).stdout)
        assert events[0]["event"] == "clear.accepted"
        assert sorted(events[0]["devices"]) == ["539900000004", "661500000001"]
        finished = events[-1]
        assert finished["event"] == "clear.finished" and finished["status"] == "succeeded", finished
        assert replied == finished and correlation is not None
        for device_id in events[0]["devices"]:
            steps = [e["step"] for e in events if e["event"] == "clear.progress" and e["device_id"] == device_id]
            assert steps == STEPS
        for event in events:
            assert event["trace_id"] == trace_id  # the request's traceparent was joined
            assert event["at"].endswith("Z") and {"event", "request_id", "at", "trace_id"} <= set(event)
        assert {w["invoice_type"] for w in shown["writebacks"]} == {"004", "007", "026"}
        assert {r["invoice_type"] for r in shown["reports"]} == {"004", "007", "026"}
        assert shown["pin_tries_left"] == 5 and shown["offline_pending"] == 0
        verified = await cli(env, "audit", "verify")
        assert verified.stdout.decode().startswith("ok ")
        assert int(verified.stdout.split()[1]) > 10
        for result in finished["results"]:
            done = await cli(env, "backup", "verify", result["backup_id"], check=False)
            assert done.returncode == 0, done.stderr.decode()
