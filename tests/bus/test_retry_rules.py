"""The settling rules both transports apply (shared/bus/retry.py), on their own."""

from __future__ import annotations

import pytest

from shared.bus.api import Attempt, BusError, Delivery, Reject, RetryLater
from shared.bus.retry import (
    EXCHANGE,
    FIRST_FAILURE,
    RETRIES,
    ROUTING_KEY,
    Verdict,
    attempt_of,
    fresh_headers,
    gives_up,
    original_route,
    retry_headers,
    settle,
)
from shared.bus.topology import COMMANDS, QueueSpec, RetrySchedule
from shared.messages.codec import DecodeError
from shared.outages import ServiceOutage

SPEC = QueueSpec("clearcard.rules", ((COMMANDS, "rules"),), delivery_limit=2,
                 retry=RetrySchedule(delays=(1.0, 10.0, 60.0), budget=3600.0))
NOW = 1_800_000_000.0


@pytest.mark.parametrize(("exc", "verdict"), [
    (Reject("never"), Verdict.DEAD_LETTER),
    (DecodeError("not JSON"), Verdict.DEAD_LETTER),
    (ExceptionGroup("g", [BusError("a"), Reject("b")]), Verdict.DEAD_LETTER),
    (BusError("gone"), Verdict.RETRY_LATER),
    (ConnectionResetError(), Verdict.RETRY_LATER),
    (ServiceOutage("the bureau's database"), Verdict.RETRY_LATER),
    (RetryLater("mail server down"), Verdict.RETRY_LATER),
    (ExceptionGroup("g", [BusError("a"), OSError("b")]), Verdict.RETRY_LATER),
    (KeyError("bug"), Verdict.REQUEUE),
    (ExceptionGroup("g", [BusError("a"), KeyError("bug")]), Verdict.REQUEUE),
])
def test_what_becomes_of_a_failed_message(exc: Exception, verdict: Verdict) -> None:
    assert settle(exc, Attempt(), SPEC).verdict is verdict


def test_the_delay_grows_with_each_retry_and_the_last_one_repeats() -> None:
    delays = [settle(BusError("x"), Attempt(retries=n), SPEC).delay for n in range(6)]
    assert delays == [1.0, 10.0, 60.0, 60.0, 60.0, 60.0]
    assert [name for name, _ in SPEC.retry_queues] == ["clearcard.rules.retry.1s", "clearcard.rules.retry.10s",
                                                       "clearcard.rules.retry.1m"]


def test_the_budget_is_time_since_the_first_failure_and_bugs_have_a_delivery_limit() -> None:
    young = attempt_of({RETRIES: 40, FIRST_FAILURE: round((NOW - 3599) * 1000)}, 0, SPEC, NOW)
    old = attempt_of({RETRIES: 2, FIRST_FAILURE: round((NOW - 3600) * 1000)}, 0, SPEC, NOW)
    assert not young.budget_spent and young.retries == 40  # many tries, still within the hour
    assert settle(BusError("x"), young, SPEC).verdict is Verdict.RETRY_LATER
    gave_up = settle(BusError("still down"), old, SPEC)
    assert gave_up.verdict is Verdict.DEAD_LETTER and gave_up.reason.startswith("still failing after 1 h")
    assert settle(KeyError("bug"), attempt_of({}, 1, SPEC, NOW), SPEC).verdict is Verdict.REQUEUE
    last = attempt_of({}, 2, SPEC, NOW)
    assert settle(KeyError("bug"), last, SPEC).reason == "failed 3 times: KeyError: 'bug'"
    # the last delivery for a bug is no last chance for an outage: that one is retried later
    assert settle(BusError("x"), last, SPEC).verdict is Verdict.RETRY_LATER
    delivery = Delivery(COMMANDS, "rules", b"{}", attempt=last)
    assert gives_up(delivery, KeyError("bug")) and not gives_up(delivery, BusError("x"))


def test_a_parked_copy_keeps_its_route_and_first_failure_and_a_replay_starts_afresh() -> None:
    first = Delivery(COMMANDS, "rules", b"{}", headers={"keep": 1, "x-delivery-count": 3, "x-death": []})
    parked = retry_headers(first, "BusError: gone", NOW)
    assert parked == {"keep": 1, EXCHANGE: COMMANDS, ROUTING_KEY: "rules", RETRIES: 1,
                      FIRST_FAILURE: round(NOW * 1000), "x-clearcard-last-error": "BusError: gone"}
    # back through the default exchange under the queue's name: the transport restores the route
    assert original_route(parked, "", "clearcard.rules") == (COMMANDS, "rules")
    assert original_route(parked, "clearcard.dlx", "clearcard.rules") == ("clearcard.dlx", "clearcard.rules")
    returned = Delivery(COMMANDS, "rules", b"{}", headers=parked, attempt=attempt_of(parked, 0, SPEC, NOW + 5))
    again = retry_headers(returned, "still", NOW + 5)
    assert again[RETRIES] == 2 and again[FIRST_FAILURE] == round(NOW * 1000) and again[ROUTING_KEY] == "rules"
    assert fresh_headers(again) == {"keep": 1, EXCHANGE: COMMANDS, ROUTING_KEY: "rules"}
