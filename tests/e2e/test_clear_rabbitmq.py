"""A clear request from a plain AMQP client (pika, not ClearCard's code) through separately
running services on real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
import trio

from tests.e2e.fleets import BRANCH, two_family_fleet
from tests.e2e.processes import cli, environment, fresh_vhost, serving

pytestmark = pytest.mark.rabbitmq
STEPS = ["authorized", "prechecked", "backed_up", "offline_uploaded", "reported",
         "declaration_checked", "written_back", "verified"]


def plain_client_clear(
    url: str, body: dict[str, Any], token: str, traceparent: str
) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    """Publish like any AMQP client would and collect the request's events, plus the reply_to copy."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        events_queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(events_queue, "clearcard.events", routing_key="clear.*")
        reply_queue = channel.queue_declare("", exclusive=True).method.queue
        correlation = uuid.uuid4().hex
        channel.confirm_delivery()
        channel.basic_publish(
            "clearcard", "clear.request", json.dumps(body).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 message_id=body["request_id"], reply_to=reply_queue,
                                 correlation_id=correlation,
                                 headers={"authorization": f"Bearer {token}", "traceparent": traceparent}))
        events: list[dict[str, Any]] = []
        for _method, _props, raw in channel.consume(events_queue, auto_ack=True, inactivity_timeout=90):
            if raw is None:
                raise AssertionError(f"no clear.finished in time; got {[e['event'] for e in events]}")
            event = json.loads(raw)
            if event["request_id"] == body["request_id"]:
                events.append(event)
                if event["event"] in ("clear.finished", "clear.rejected"):
                    break
        channel.cancel()
        for _method, props, raw in channel.consume(reply_queue, auto_ack=True, inactivity_timeout=30):
            assert raw is not None, "the final event was not sent to reply_to"
            return events, json.loads(raw), props.correlation_id
        raise AssertionError("unreachable")
    finally:
        connection.close()


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
