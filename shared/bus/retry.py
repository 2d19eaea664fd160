"""What becomes of a message whose handler failed: retried later, returned now, or dead-lettered.

Pure: both transports call `settle` with the queue's spec and their clock, so the in-memory bus
and RabbitMQ decide alike (the contract suite in tests/bus checks it).

- an outage (database or broker trouble, or `RetryLater`): the message waits in a retry queue
  and comes back after a growing delay, until its retry budget (hours) is spent;
- a bug (any other exception): returned to the queue at once, up to the queue's delivery limit;
- `Reject` / `DecodeError`: dead-lettered at once: no retry can make it readable.

Retry state travels in the message's headers, so it survives any consumer's restart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.bus.api import Attempt, Delivery, Reject, RetryLater
from shared.bus.topology import QueueSpec
from shared.messages.codec import DecodeError
from shared.outages import OUTAGE_ERRORS, describe

RETRIES = "x-clearcard-retries"  # how many times the message was retried later
FIRST_FAILURE = "x-clearcard-first-failure"  # epoch milliseconds of its first failure
LAST_ERROR = "x-clearcard-last-error"  # what the last failure was, in a few words
DEAD_REASON = "x-clearcard-dead-reason"  # why a consumer dead-lettered it
DEAD_QUEUE = "x-clearcard-dead-queue"  # the work queue it was dead-lettered from
DEAD_AT = "x-clearcard-dead-at"  # epoch milliseconds
# where the message was first published: a parked or dead-lettered copy travels under the
# queue's name, and handlers dispatch on the original routing key
EXCHANGE = "x-clearcard-exchange"
ROUTING_KEY = "x-clearcard-routing-key"
# cleared on replay: a replayed message starts with a fresh retry budget
RETRY_HEADERS = (RETRIES, FIRST_FAILURE, LAST_ERROR, DEAD_REASON, DEAD_QUEUE, DEAD_AT)


class Verdict(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"  # to the queue's `.dead` companion, with the reason
    REQUEUE = "requeue"  # nack, requeue=True: tried again at once (counts towards the delivery limit)
    RETRY_LATER = "retry_later"  # parked in a retry queue, back after `delay` seconds


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    reason: str = ""
    delay: float = 0.0
    headers: Mapping[str, Any] = field(default_factory=dict)  # RETRY_LATER: added to the parked copy


ACKED = Settlement(Verdict.ACK)
_REFUSALS = (Reject, DecodeError)
_RETRY_LATER = (*OUTAGE_ERRORS, RetryLater)


def failure_kind(exc: BaseException) -> str:
    """`refused`, `outage` or `bug`; a group is refused if any member is, an outage if all are."""
    if isinstance(exc, BaseExceptionGroup):
        if exc.split(_REFUSALS)[0] is not None:
            return "refused"
        return "outage" if exc.split(_RETRY_LATER)[1] is None else "bug"
    if isinstance(exc, _REFUSALS):
        return "refused"
    return "outage" if isinstance(exc, _RETRY_LATER) else "bug"


def _notes(exc: BaseException) -> dict[str, Any]:
    """Headers a RetryLater (anywhere in a group) asks to keep with the parked copy."""
    if isinstance(exc, RetryLater):
        return dict(exc.headers)
    if isinstance(exc, BaseExceptionGroup):
        notes: dict[str, Any] = {}
        for member in exc.exceptions:
            notes.update(_notes(member))
        return notes
    return {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)) and str(value if isinstance(value, str) else value.decode()).isdigit():
        return int(value)
    return None


def gives_up(delivery: Delivery, exc: BaseException) -> bool:
    """True if the delivery's handler failing with `exc` dead-letters the message (its last chance)."""
    kind = failure_kind(exc)
    attempt = delivery.attempt
    return kind == "refused" or (kind == "outage" and attempt.budget_spent) or (
        kind == "bug" and attempt.last_delivery)


def attempt_of(headers: Mapping[str, Any], delivery_count: int, spec: QueueSpec | None, now: float) -> Attempt:
    """The attempt a delivery is, from its headers, the broker's delivery count and the clock."""
    if spec is None:  # a queue without retry rules (a reply queue): nothing gives up
        return Attempt()
    retries = _int(headers.get(RETRIES)) or 0
    first_ms = _int(headers.get(FIRST_FAILURE))
    first = first_ms / 1000 if first_ms is not None else None
    return Attempt(retries=retries, first_failure=first,
                   budget_spent=first is not None and now - first >= spec.retry.budget,
                   last_delivery=delivery_count >= spec.delivery_limit)


def settle(exc: BaseException, attempt: Attempt, spec: QueueSpec | None) -> Settlement:
    """What to do with a delivery whose handler raised `exc`."""
    error = describe(exc)
    kind = failure_kind(exc)
    if kind == "refused":
        return Settlement(Verdict.DEAD_LETTER, f"refused: {error}")
    if spec is None:
        return Settlement(Verdict.REQUEUE, error)
    if kind == "outage":
        if attempt.budget_spent:
            hours = spec.retry.budget / 3600
            return Settlement(Verdict.DEAD_LETTER, f"still failing after {hours:g} h of retries "
                                                   f"({attempt.retries} tries): {error}")
        return Settlement(Verdict.RETRY_LATER, error, spec.retry.delay(attempt.retries), _notes(exc))
    if attempt.last_delivery:
        return Settlement(Verdict.DEAD_LETTER, f"failed {spec.delivery_limit + 1} times: {error}")
    return Settlement(Verdict.REQUEUE, error)


def _broker_free(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers without the broker's own bookkeeping (delivery count, dead-letter history)."""
    return {k: v for k, v in headers.items()
            if k != "x-delivery-count" and not k.startswith(("x-death", "x-first-death", "x-last-death"))}


def _route(delivery: Delivery) -> dict[str, Any]:
    """Where the delivery was first published (transports have restored it already)."""
    return {EXCHANGE: delivery.exchange, ROUTING_KEY: delivery.routing_key}


def original_route(headers: Mapping[str, Any], exchange: str, routing_key: str) -> tuple[str, str]:
    """(exchange, routing key) the message was first published with.

    A message back from a retry queue, or replayed, arrives through the default exchange under
    its queue's name; its first route is in its headers. Anything else arrived as published (a
    dead letter keeps the dead-letter exchange's route).
    """
    def text(value: Any, default: str) -> str:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value if isinstance(value, str) else default

    if exchange != "":
        return exchange, routing_key
    return text(headers.get(EXCHANGE), exchange), text(headers.get(ROUTING_KEY), routing_key)


def retry_headers(delivery: Delivery, error: str, now: float,
                  notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The headers of the copy parked in a retry queue (with a handler's `notes`)."""
    attempt = delivery.attempt
    first = attempt.first_failure if attempt.first_failure is not None else now
    return {**_broker_free(delivery.headers), **(notes or {}), **_route(delivery),
            RETRIES: attempt.retries + 1, FIRST_FAILURE: round(first * 1000), LAST_ERROR: error[:300]}


def dead_headers(delivery: Delivery, queue: str, reason: str, now: float) -> dict[str, Any]:
    """The headers of a message a consumer dead-letters: why, from where, when."""
    return {**_broker_free(delivery.headers), **_route(delivery),
            DEAD_REASON: reason[:500], DEAD_QUEUE: queue, DEAD_AT: round(now * 1000)}


def fresh_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A replayed message's headers: no trace of earlier retries or deaths, a fresh budget."""
    return {k: v for k, v in _broker_free(headers).items() if k not in RETRY_HEADERS}
