"""Service identity on internal messages, bound to the message: nothing trusts the network.

Every message a ClearCard service publishes carries `x-clearcard-service: v1 <service> <ms>
<signature>`: an Ed25519 signature by that service's own key over the exchange, routing key,
message id, correlation id, reply-to, a SHA-256 digest of the body, the signing time, the
`authorization` header and the subject it acts for (`x-clearcard-subject`). A consumer accepts
the message only if the signature verifies for exactly this message and route, the signing
service may send to the consuming queue (shared/bus/senders.py) and the signature is younger
than that queue's limit. So a header copied onto another message, onto another queue or route,
or replayed after it expired, is refused: dead-lettered and audited, it never reaches a handler.
Public entry queues are not checked here (their handlers check the caller's bearer token).

Cost per message: one Ed25519 signature when publishing, one verification and a SHA-256 of the
body when consuming; public keys are read once per service and cached (benchmarks/identity.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import audit
from shared.audit import SUBJECT_HEADER
from shared.bus.api import Bus, Delivery, Handler, Reject, RetryLater, Sender
from shared.bus.retry import failure_kind
from shared.bus.routing import topic_matches
from shared.bus.senders import is_public, rule_for
from shared.bus.topology import DEFAULT, Topology
from shared.errors import ErrorCode
from shared.outages import describe

HEADER = "x-clearcard-service"
CLOCK_SKEW = 30.0  # seconds a signature may seem to come from the future (hosts' clocks differ)
_VERSION = "v1"
_DOMAIN = "clearcard-identity/1"
_SERVICE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")

log = structlog.get_logger("clearcard.identity")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class IdentityKeyMissing(Exception):
    """This host has no private key for a service it runs (and cannot make one)."""


class ServiceKeys:
    """One Ed25519 key pair per service in one folder: `<service>.key` (private, mode 0600) and
    `<service>.pub` (raw 32 bytes). Every host needs every service's `.pub`, and only its own
    services' `.key` (`clearcard identity keygen`, docs/scaling.md)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, tuple[int, Ed25519PublicKey]] = {}

    @staticmethod
    def check_name(service: str) -> str:
        if not _SERVICE.match(service):
            raise ValueError(f"{service!r} is not a service name (a-z, 0-9 and -, up to 32)")
        return service

    def create(self, service: str) -> bool:
        """Make `service`'s key pair unless it exists; True if it was made.

        Two replicas starting at once may both try: the key is written to a file of its own and
        linked into place, so the loser finds the winner's key complete and keeps it.
        """
        self.check_name(service)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{service}.key"
        if path.exists():
            return False
        key = Ed25519PrivateKey.generate()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes_raw())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        public = self.folder / f"{service}.pub"
        staged = public.with_name(f".{public.name}.{os.getpid()}.tmp")
        staged.write_bytes(key.public_key().public_bytes_raw())
        os.replace(staged, public)
        return True

    def private(self, service: str) -> Ed25519PrivateKey:
        """`service`'s signing key, made on first use where none was deployed."""
        key = self._private.get(service)
        if key is None:
            path = self.folder / f"{self.check_name(service)}.key"
            try:
                if not path.exists():
                    self.create(service)
                key = self._private[service] = Ed25519PrivateKey.from_private_bytes(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise IdentityKeyMissing(
                    f"no usable identity key for service {service!r} in {self.folder} ({exc}); make one with "
                    "`clearcard identity keygen` and deploy it (docs/scaling.md)") from exc
        return key

    def public(self, service: str, *, recheck: bool = False) -> Ed25519PublicKey | None:
        """`service`'s verifying key (cached; `recheck` re-reads it if the file changed)."""
        cached = self._public.get(service)
        if cached is not None and not recheck:
            return cached[1]
        if not _SERVICE.match(service):
            return None
        path = self.folder / f"{service}.pub"
        try:
            stamp = path.stat().st_mtime_ns
            if cached is not None and cached[0] == stamp:
                return cached[1]
            key = Ed25519PublicKey.from_public_bytes(path.read_bytes())
        except FileNotFoundError:
            # a service on this host may have just made its pair: its .pub follows its .key
            try:
                return Ed25519PrivateKey.from_private_bytes(
                    (self.folder / f"{service}.key").read_bytes()).public_key()
            except (OSError, ValueError):
                return cached[1] if cached else None
        except (OSError, ValueError):
            return cached[1] if cached else None
        self._public[service] = (stamp, key)
        return key


def signed_bytes(service: str, at_ms: int, exchange: str, routing_key: str, body: bytes,
                 message_id: str | None, correlation_id: str | None, reply_to: str | None,
                 subject: str | None, authorization: str | None) -> bytes:
    """What the signature covers (a JSON array: unambiguous whatever the strings hold)."""
    digest = hashlib.sha256(body).hexdigest()
    return json.dumps([_DOMAIN, service, at_ms, exchange, routing_key, message_id, correlation_id, reply_to,
                       digest, subject, authorization], separators=(",", ":"), ensure_ascii=True).encode("ascii")


# (queue, exchange, routing key) -> True if that route delivers to that queue
RouteCheck = Callable[[str, str, str], bool]


class ServiceIdentity:
    """Signs this service's messages and verifies other services' signatures."""

    def __init__(self, keys: ServiceKeys, service: str, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.service = ServiceKeys.check_name(service)
        self.clock = clock

    def sign(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
             correlation_id: str | None = None, reply_to: str | None = None,
             headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`headers` with this service's identity for exactly this message added."""
        out = dict(headers or {})
        at_ms = int(self.clock() * 1000)
        payload = signed_bytes(self.service, at_ms, exchange, routing_key, body, message_id, correlation_id,
                               reply_to, _text(out.get(SUBJECT_HEADER)), _text(out.get("authorization")))
        signature = base64.urlsafe_b64encode(self.keys.private(self.service).sign(payload)).decode("ascii")
        out[HEADER] = f"{_VERSION} {self.service} {at_ms} {signature.rstrip('=')}"
        return out

    def verify(self, queue: str, delivery: Delivery, leads_to: RouteCheck | None = None) -> Sender:
        """The verified sender of `delivery` taken from `queue`; raises Reject saying why not."""
        raw = _text(delivery.headers.get(HEADER))
        if not raw:
            raise Reject("no service identity on an internal message")
        parts = raw.split(" ")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit():
            raise Reject("malformed service identity")
        service, at_ms, encoded = parts[1], int(parts[2]), parts[3]
        rule = rule_for(queue)
        if rule is None:
            raise Reject(f"queue {queue} accepts no internal messages (no rule in shared/bus/senders.py)")
        if not rule.allows(service):
            raise Reject(f"service {service!r} may not send to queue {queue}")
        age = self.clock() - at_ms / 1000
        if age > rule.max_age:
            raise Reject(f"service identity expired: signed {age:.0f} s ago, valid {rule.max_age:.0f} s on {queue}")
        if age < -CLOCK_SKEW:
            raise Reject(f"service identity signed {-age:.0f} s in the future")
        try:
            signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise Reject("malformed service identity signature") from None
        subject = _text(delivery.headers.get(SUBJECT_HEADER))
        authorization = _text(delivery.headers.get("authorization"))
        for recheck in (False, True):  # a second look at the key file, in case it was replaced
            key = self.keys.public(service, recheck=recheck)
            if key is None:
                raise Reject(f"no public key for service {service!r}")
            for exchange, routing_key in _routes(queue, delivery, leads_to):
                payload = signed_bytes(service, at_ms, exchange, routing_key, delivery.body, delivery.message_id,
                                       delivery.correlation_id, delivery.reply_to, subject, authorization)
                try:
                    key.verify(signature, payload)
                except InvalidSignature:
                    continue
                return Sender(service, subject, datetime.fromtimestamp(at_ms / 1000, UTC))
        raise Reject("service identity does not match this message (copied from another message, queue or route)")


def _routes(queue: str, delivery: Delivery, leads_to: RouteCheck | None) -> Iterator[tuple[str, str]]:
    """The route the message came by, then the routes it first took if the broker dead-lettered it
    back here (x-death), where those lead to this queue."""
    yield delivery.exchange, delivery.routing_key
    deaths = delivery.headers.get("x-death")
    if not isinstance(deaths, list) or leads_to is None:
        return
    for death in deaths:
        if not isinstance(death, Mapping):
            continue
        exchange = _text(death.get("exchange"))
        keys = death.get("routing-keys")
        if exchange is None or not isinstance(keys, list):
            continue
        for key in (_text(k) for k in keys):
            if key is not None and (exchange, key) != (delivery.exchange, delivery.routing_key) \
                    and leads_to(queue, exchange, key):
                yield exchange, key


class IdentifiedBus:
    """A service's view of the bus: signs what it publishes, checks what it consumes."""

    def __init__(self, inner: Bus, identity: ServiceIdentity) -> None:
        self._inner = inner
        self._identity = identity
        self._bindings: dict[str, set[tuple[str, str]]] = {}  # queue -> (exchange, pattern)

    @property
    def service(self) -> str:
        return self._identity.service

    @property
    def identity(self) -> ServiceIdentity:
        return self._identity

    @property
    def unsigned(self) -> Bus:
        """The transport itself: for passing on a message someone else signed (a dead-letter replay)."""
        return self._inner

    async def declare(self, topology: Topology) -> None:
        for spec in topology.queues:
            self._bindings.setdefault(spec.name, set()).update(spec.bindings)
        await self._inner.declare(topology)

    async def declare_reply_queue(self) -> str:
        return await self._inner.declare_reply_queue()

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        await self._inner.bind(queue, exchange, pattern)
        self._bindings.setdefault(queue, set()).add((exchange, pattern))

    def leads_to(self, queue: str, exchange: str, routing_key: str) -> bool:
        """True if a message published on (exchange, routing_key) reaches `queue` by its bindings."""
        if exchange == DEFAULT:
            return routing_key == queue
        return any(ex == exchange and topic_matches(pattern, routing_key)
                   for ex, pattern in self._bindings.get(queue, ()))

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
        signed = self._identity.sign(exchange, routing_key, body, message_id=message_id,
                                     correlation_id=correlation_id, reply_to=reply_to, headers=headers)
        await self._inner.publish(exchange, routing_key, body, message_id=message_id,
                                  correlation_id=correlation_id, reply_to=reply_to, headers=signed)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if is_public(queue):
            await self._inner.consume(queue, handler, prefetch=prefetch, task_status=task_status)
            return

        from shared.authz.vouchers import VOUCHER, vouch, vouched_sender  # (vouchers builds on this module)

        async def checked(delivery: Delivery) -> None:
            verified_at = self._identity.clock()
            try:
                sender = self._identity.verify(queue, delivery, self.leads_to)
            except Reject as exc:
                # an identity that expired while its message waited in a retry queue, or before an
                # operator replayed it: good if a valid voucher covers it (shared/authz/vouchers.py)
                vouched = vouched_sender(self._identity, queue, delivery, self.leads_to)
                if vouched is None:
                    await self._refused(queue, delivery, str(exc))
                    raise
                sender = vouched
            try:
                await handler(replace(delivery, sender=sender))
            except Exception as exc:
                if VOUCHER in delivery.headers or failure_kind(exc) != "outage":
                    raise
                # retried later, maybe past the identity's age: vouch now, while it is verified
                raise RetryLater(describe(exc), headers=vouch(self._identity, "retry", queue, delivery.headers,
                                                              at=verified_at)) from exc

        await self._inner.consume(queue, checked, prefetch=prefetch, task_status=task_status)

    async def _refused(self, queue: str, delivery: Delivery, reason: str) -> None:
        claimed = (_text(delivery.headers.get(HEADER)) or "").split(" ")
        log.warning("internal message refused: service identity not valid here", queue=queue,
                    routing_key=delivery.routing_key, reason=reason)
        await audit.record(self, service=self.service, subject="unknown", action="message.rejected",
                           record_id=f"rejected-message:{uuid.uuid4().hex}", outcome="dead_lettered",
                           error_code=ErrorCode.AUTH_INVALID.value,
                           detail={"queue": queue, "exchange": delivery.exchange[:200],
                                   "routing_key": delivery.routing_key[:200],
                                   "message_id": (delivery.message_id or "")[:200],
                                   "claimed_service": claimed[1][:64] if len(claimed) > 1 else None,
                                   "reason": reason[:300]})

    def __getattr__(self, name: str) -> Any:  # transport extras (queue_depth, depth) pass through
        return getattr(self._inner, name)
