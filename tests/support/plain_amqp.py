"""A clear request from a plain AMQP client (pika, not ClearCard's code): what any ERP would send."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika


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
