"""Vouchers: a message retried later (hours) or replayed (days) keeps its sender's identity, and
nothing else gets through (shared/authz/vouchers.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from shared.authz.identity import IdentifiedBus, ServiceIdentity, ServiceKeys
from shared.authz.vouchers import VOUCHER, vouch, vouched_sender
from shared.bus.api import BusError, Delivery
from shared.bus.memory import MemoryBus
from shared.bus.senders import IDENTITY_TTL, rule_for
from shared.bus.topology import BACKUP, CLEAR_AUTHORIZED, COMMANDS, COORDINATOR_REQUESTS, RETRY_SCHEDULE, topology_for
from tests.authz.test_identity import NOW, Clock

QUEUE = COORDINATOR_REQUESTS.name  # clear.authorized: only auth may send it
_RULE = rule_for(QUEUE)
assert _RULE is not None
AGE = _RULE.max_age  # how long an identity is good on that queue (a day: nobody sends it again)


@pytest.fixture
def keys(tmp_path: Path) -> ServiceKeys:
    return ServiceKeys(tmp_path / "services")


def authorized(auth: ServiceIdentity, body: bytes = b'{"request_id": "r-1"}') -> Delivery:
    headers = auth.sign(COMMANDS, CLEAR_AUTHORIZED, body, message_id="r-1", headers={"authorization": "Bearer t"})
    return Delivery(COMMANDS, CLEAR_AUTHORIZED, body, message_id="r-1", headers=headers)


def test_a_retry_voucher_keeps_a_message_good_for_its_retry_budget(keys: ServiceKeys) -> None:
    clock = Clock()
    auth, coordinator = ServiceIdentity(keys, "auth", clock), ServiceIdentity(keys, "coordinator", clock)
    delivery = authorized(auth)
    clock.now = NOW + 10  # the first delivery failed on an outage: the coordinator vouches
    retried = replace(delivery, headers={**delivery.headers, **vouch(coordinator, "retry", QUEUE, delivery.headers)})
    clock.now = NOW + RETRY_SCHEDULE.budget  # hours later, as long as the retry budget lasts
    sender = vouched_sender(coordinator, QUEUE, retried, None)
    assert sender is not None and sender.service == "auth"
    assert vouched_sender(coordinator, "clearcard.backup", retried, None) is None  # another queue
    gateway = ServiceIdentity(keys, "gateway", clock)  # a voucher by anyone but the consumer itself
    forged = replace(delivery, headers={**delivery.headers, **vouch(gateway, "retry", QUEUE, delivery.headers)})
    assert vouched_sender(coordinator, QUEUE, forged, None) is None
    swapped = replace(retried, body=b'{"request_id": "r-2"}')  # the voucher covers the signed message only
    assert vouched_sender(coordinator, QUEUE, swapped, None) is None
    clock.now = NOW + RETRY_SCHEDULE.budget + 2 * 3600  # past any retry budget
    assert vouched_sender(coordinator, QUEUE, retried, None) is None


def test_a_voucher_cannot_revive_an_identity_that_was_stale_when_vouched(keys: ServiceKeys) -> None:
    clock = Clock()
    auth, coordinator = ServiceIdentity(keys, "auth", clock), ServiceIdentity(keys, "coordinator", clock)
    delivery = authorized(auth)
    clock.now = NOW + AGE + 60  # a replayed old capture, vouched by mistake
    late = replace(delivery, headers={**delivery.headers, **vouch(coordinator, "retry", QUEUE, delivery.headers)})
    assert vouched_sender(coordinator, QUEUE, late, None) is None


def test_an_operator_replay_voucher_is_good_for_minutes_and_only_for_authentic_messages(keys: ServiceKeys) -> None:
    clock = Clock()
    auth, coordinator = ServiceIdentity(keys, "auth", clock), ServiceIdentity(keys, "coordinator", clock)
    cli = ServiceIdentity(keys, "cli", clock)
    delivery = authorized(auth)
    clock.now = NOW + 3 * 86_400  # dead-lettered, replayed days later
    replayed = replace(delivery, headers={**delivery.headers, **vouch(cli, "replay", QUEUE, delivery.headers)})
    sender = vouched_sender(coordinator, QUEUE, replayed, None)
    assert sender is not None and sender.service == "auth"
    clock.now += IDENTITY_TTL + 1
    assert vouched_sender(coordinator, QUEUE, replayed, None) is None  # a replay is acted on at once
    # an operator cannot make a message no service signed, nor one its sender may not send
    gateway = ServiceIdentity(keys, "gateway", clock)
    foreign = authorized(gateway)
    foreign = replace(foreign, headers={**foreign.headers, **vouch(cli, "replay", QUEUE, foreign.headers)})
    assert vouched_sender(coordinator, QUEUE, foreign, None) is None
    assert vouch(cli, "replay", QUEUE, {}) == {}  # a request from outside has no identity to vouch for


async def test_a_message_retried_past_its_identity_age_reaches_the_handler(keys: ServiceKeys) -> None:
    """On the in-memory bus: the first delivery meets an outage, the consumer vouches, and the
    copy that comes back after the identity's age passed is still taken (and only once). On a
    queue whose identities last minutes (backup.take from the coordinator): on the hand-off
    queues an identity outlasts the retry budget and needs no voucher."""
    clock = Clock(1_800_000_000.0)
    bus = MemoryBus()
    coordinator = IdentifiedBus(bus, ServiceIdentity(keys, "coordinator", clock))
    backup = IdentifiedBus(bus, ServiceIdentity(keys, "backup", clock))
    await backup.declare(topology_for(BACKUP))
    send, seen = trio.open_memory_channel[Delivery](math.inf)

    async def handler(delivery: Delivery) -> None:
        send.send_nowait(delivery)
        if delivery.attempt.retries == 0:
            clock.now += IDENTITY_TTL * 3  # the outage outlasts the identity
            raise BusError("broker away")

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: backup.consume(BACKUP.name, handler, task_status=task_status))
        await coordinator.publish(COMMANDS, "backup.take", b'{"device_id": "1"}', message_id="t-1")
        with trio.fail_after(10):
            first, again = await seen.receive(), await seen.receive()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert (first.attempt.retries, again.attempt.retries) == (0, 1)
    assert VOUCHER in again.headers and again.sender is not None and again.sender.service == "coordinator"
    assert bus.depth(BACKUP.dead_letter_queue) == 0
