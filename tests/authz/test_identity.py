"""Service identities bound to the message: what a consumer accepts, and what it refuses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shared.authz.identity import HEADER, ServiceIdentity, ServiceKeys
from shared.bus.api import Delivery, Reject
from shared.bus.senders import AUDIT_TTL, HANDOFF_TTL, IDENTITY_TTL, RULES, SERVICES, is_public, rule_for
from shared.bus.topology import AUDIT, BACKUP, COMMANDS, COORDINATOR_REQUESTS, DEAD_LETTERS

NOW = 1_790_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(identity: ServiceIdentity, routing_key: str = "backup.take", body: bytes = b'{"device_id": "1"}',
           **props: str) -> Delivery:
    headers = identity.sign(COMMANDS, routing_key, body, message_id=props.get("message_id", "m-1"),
                            correlation_id=props.get("correlation_id"), reply_to=props.get("reply_to"),
                            headers={"authorization": props["authorization"]} if "authorization" in props else None)
    return Delivery(exchange=COMMANDS, routing_key=routing_key, body=body, message_id=props.get("message_id", "m-1"),
                    correlation_id=props.get("correlation_id"), reply_to=props.get("reply_to"), headers=headers)


@pytest.fixture
def keys(tmp_path: Path) -> ServiceKeys:
    return ServiceKeys(tmp_path / "services")


def test_a_signed_message_names_its_sender(keys: ServiceKeys) -> None:
    clock = Clock()
    coordinator = ServiceIdentity(keys, "coordinator", clock)
    backup = ServiceIdentity(ServiceKeys(keys.folder), "backup", clock)  # another process, same public keys
    sender = backup.verify(BACKUP.name, signed(coordinator))
    assert sender.service == "coordinator" and sender.at.timestamp() == NOW
    assert oct((keys.folder / "coordinator.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("change", [
    {"body": b'{"device_id": "2"}'}, {"message_id": "m-2"}, {"correlation_id": "c-9"}, {"reply_to": "elsewhere"},
    {"routing_key": "backup.verify"}, {"exchange": "clearcard.events"},
    {"headers_extra": {"authorization": "Bearer someone-else"}},
])
def test_the_identity_copied_onto_another_message_is_refused(keys: ServiceKeys, change: dict[str, object]) -> None:
    clock = Clock()
    original = signed(ServiceIdentity(keys, "coordinator", clock), correlation_id="c-1", reply_to="q-1")
    extra = change.pop("headers_extra", None)
    copied = replace(original, **change)  # type: ignore[arg-type]
    if extra:
        copied = replace(copied, headers={**copied.headers, **extra})  # type: ignore[dict-item]
    with pytest.raises(Reject, match="does not match this message"):
        ServiceIdentity(keys, "backup", clock).verify(BACKUP.name, copied)


def test_a_queue_takes_only_the_services_allowed_to_send_to_it(keys: ServiceKeys) -> None:
    clock = Clock()
    gateway = ServiceIdentity(keys, "gateway", clock)
    checker = ServiceIdentity(keys, "coordinator", clock)
    with pytest.raises(Reject, match=r"service 'gateway' may not send to queue clearcard\.coordinator\.requests"):
        checker.verify(COORDINATOR_REQUESTS.name, signed(gateway, "clear.authorized"))
    with pytest.raises(Reject, match="accepts no internal messages"):
        checker.verify("clearcard.somebody-elses-queue", signed(gateway))
    assert checker.verify(AUDIT.name, signed(gateway, "audit.record")).service == "gateway"


def test_an_identity_is_good_for_minutes_and_never_from_the_future(keys: ServiceKeys) -> None:
    clock = Clock()
    delivery = signed(ServiceIdentity(keys, "coordinator", clock))
    checker = ServiceIdentity(keys, "backup", clock)
    clock.now = NOW + IDENTITY_TTL - 1
    checker.verify(BACKUP.name, delivery)
    clock.now = NOW + IDENTITY_TTL + 1
    with pytest.raises(Reject, match="expired"):
        checker.verify(BACKUP.name, delivery)
    clock.now = NOW - 60
    with pytest.raises(Reject, match="in the future"):
        checker.verify(BACKUP.name, delivery)
    # audit records may wait out an audit-service outage (each is stored once by its id)
    record = signed(ServiceIdentity(keys, "coordinator", Clock(NOW)), "audit.record")
    clock.now = NOW + AUDIT_TTL - 1
    checker.verify(AUDIT.name, record)


def test_hand_offs_wait_out_a_long_outage_or_backlog(keys: ServiceKeys) -> None:
    # nobody sends these again: a clear request authorized before a two-hour coordinator outage,
    # and the events for notify, are still taken (each is processed once by its id)
    clock = Clock()
    authorized = signed(ServiceIdentity(keys, "auth", clock), "clear.authorized")
    finished = signed(ServiceIdentity(keys, "coordinator", clock), "clear.finished")
    clock.now = NOW + 2 * 3600
    assert ServiceIdentity(keys, "coordinator", clock).verify(COORDINATOR_REQUESTS.name, authorized).service == "auth"
    assert ServiceIdentity(keys, "notify", clock).verify("clearcard.notify", finished).service == "coordinator"
    clock.now = NOW + HANDOFF_TTL + 1  # a capture replayed the next day is still refused
    with pytest.raises(Reject, match="expired"):
        ServiceIdentity(keys, "coordinator", clock).verify(COORDINATOR_REQUESTS.name, authorized)


def test_a_forged_unknown_or_malformed_identity_is_refused(keys: ServiceKeys, tmp_path: Path) -> None:
    clock = Clock()
    checker = ServiceIdentity(keys, "backup", clock)
    ServiceIdentity(keys, "coordinator", clock).sign(COMMANDS, "x", b"")  # its public key is known here
    impostor = ServiceIdentity(ServiceKeys(tmp_path / "elsewhere"), "coordinator", clock)
    with pytest.raises(Reject, match="does not match"):
        checker.verify(BACKUP.name, signed(impostor))
    nobody = signed(ServiceIdentity(ServiceKeys(tmp_path / "elsewhere"), "console", clock))
    with pytest.raises(Reject, match="may not send"):
        checker.verify(BACKUP.name, nobody)
    for bad in ("", "v1 coordinator", "v2 coordinator 1 sig", "v1 coordinator soon sig", "v1 coordinator 1 !!"):
        delivery = replace(signed(ServiceIdentity(keys, "coordinator", clock)), headers={HEADER: bad})
        with pytest.raises(Reject):
            checker.verify(BACKUP.name, delivery)


def test_a_replaced_public_key_is_read_again(keys: ServiceKeys) -> None:
    clock = Clock()
    checker = ServiceIdentity(keys, "backup", clock)
    checker.verify(BACKUP.name, signed(ServiceIdentity(keys, "coordinator", clock)))
    (keys.folder / "coordinator.key").unlink()
    rotated = ServiceKeys(keys.folder)
    rotated.create("coordinator")  # a new key pair deployed for the coordinator
    assert checker.verify(BACKUP.name, signed(ServiceIdentity(rotated, "coordinator", clock))).service == "coordinator"


def test_a_message_dead_lettered_back_to_its_queue_keeps_its_identity(keys: ServiceKeys) -> None:
    """Broker retries (dead-lettering through a delay queue) change the route, not the message."""
    clock = Clock()
    original = signed(ServiceIdentity(keys, "coordinator", clock))
    retried = replace(original, exchange=DEAD_LETTERS, routing_key=BACKUP.name, headers={
        **original.headers, "x-death": [{"exchange": COMMANDS, "routing-keys": ["backup.take"], "queue": "x"}]})
    checker = ServiceIdentity(keys, "backup", clock)

    def backup_bindings(queue: str, exchange: str, routing_key: str) -> bool:
        return queue == BACKUP.name and exchange == COMMANDS and routing_key.startswith("backup.")

    assert checker.verify(BACKUP.name, retried, backup_bindings).service == "coordinator"
    # a forged x-death naming a route that does not lead to this queue buys nothing
    elsewhere = replace(retried, headers={**retried.headers, "x-death": [
        {"exchange": COMMANDS, "routing-keys": ["gateway.default.writeback"]}]})
    with pytest.raises(Reject):
        checker.verify(BACKUP.name, elsewhere, backup_bindings)


def test_the_senders_table_names_known_services_and_every_declared_queue() -> None:
    assert all(rule.services <= SERVICES for rule in RULES)
    assert is_public("clearcard.auth.requests") and is_public("clearcard.coordinator.commands.dead")
    from services.coordinator.topology import COORDINATOR_COMMANDS
    from shared.bus.senders import COORDINATOR_COMMANDS as NAMED

    assert COORDINATOR_COMMANDS.name == NAMED
    for queue in ("clearcard.backup", "clearcard.authority", "clearcard.audit", "clearcard.gateway.default",
                  "clearcard.gateway.default.shard.3", "clearcard.notify", "clearcard.reply.abc", "amq.gen-x"):
        assert rule_for(queue) is not None, queue
    assert rule_for("clearcard.gateway.default.shard.3").services == {"gateway"}  # type: ignore[union-attr]


def test_replicas_making_the_same_key_at_once_end_with_one(tmp_path: Path) -> None:
    import threading

    folder = tmp_path / "services"
    seen: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        keys = ServiceKeys(folder)
        barrier.wait()
        seen.append(keys.private("coordinator").private_bytes_raw())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8
    assert sorted(p.name for p in folder.iterdir()) == ["coordinator.key", "coordinator.pub"]
    public = ServiceKeys(folder).public("coordinator")
    assert public is not None and public.public_bytes_raw() == ServiceKeys(folder).private(
        "coordinator").public_key().public_bytes_raw()
