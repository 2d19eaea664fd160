"""Service identity on internal messages: nothing trusts the network.

Every message a ClearCard service publishes carries a short-lived token naming that service
(header `x-clearcard-service`), signed with the auth keys under an audience of its own, so it
can never be used as a person's bearer token nor a bearer token as a service identity. Every
service checks it on every message it consumes, except on the public entry queue where clear
requests from outside arrive (auth checks their bearer token instead). A message without a
valid identity is dead-lettered and audited; it never reaches a handler.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt
import structlog
import trio

from services.auth.tokens import ISSUER, KeyRing
from shared import audit
from shared.bus.api import Bus, Delivery, Handler, Reject
from shared.bus.topology import AUTH_REQUESTS, COORDINATOR_COMMANDS, RETRY_SCHEDULE, Topology

HEADER = "x-clearcard-service"
AUDIENCE = "clearcard-internal"
TTL = 3600
RENEW_BEFORE = 600
MAX_RETRY_LEEWAY = RETRY_SCHEDULE.budget + TTL  # the longest a message may wait in retry queues
# Queues where requests from outside arrive; their handlers check the caller's bearer token.
PUBLIC_QUEUES = frozenset({AUTH_REQUESTS.name, AUTH_REQUESTS.dead_letter_queue,
                           COORDINATOR_COMMANDS.name, COORDINATOR_COMMANDS.dead_letter_queue})

log = structlog.get_logger("clearcard.identity")


class ServiceIdentity:
    """Issues this service's identity token and checks other services' tokens (cached)."""

    def __init__(self, keys: KeyRing, service: str) -> None:
        self.keys = keys
        self.service = service
        self._token: tuple[str, float] | None = None
        self._verified: dict[str, tuple[str, float]] = {}

    def token(self) -> str:
        now = time.time()
        if self._token is None or self._token[1] - now < RENEW_BEFORE:
            kid, key = self.keys.signing_key()
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"service:{self.service}", "iat": int(now),
                      "exp": int(now) + TTL, "jti": secrets.token_hex(8)}
            self._token = (jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid}), now + TTL)
        return self._token[0]

    def check(self, headers: Mapping[str, Any], *, leeway: float = 0.0) -> str:
        """The sending service's name; raises Reject when the identity is missing or not valid.

        `leeway`: seconds an identity may be past its expiry (a message that waited in retry
        queues was checked when it first arrived; see `IdentifiedBus.consume`).
        """
        raw = headers.get(HEADER)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if not isinstance(raw, str) or not raw:
            raise Reject("no service identity on an internal message")
        cached = self._verified.get(raw)
        if cached and cached[1] + leeway > time.time():
            return cached[0]
        try:
            kid = jwt.get_unverified_header(raw).get("kid")
            key = self.keys.public_keys().get(str(kid))
            if key is None:
                raise Reject("service identity signed by an unknown key")
            claims = jwt.decode(raw, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub"]}, leeway=leeway)
        except jwt.PyJWTError as exc:
            raise Reject(f"service identity not valid: {exc}") from None
        subject = str(claims["sub"])
        if not subject.startswith("service:"):
            raise Reject("service identity does not name a service")
        if len(self._verified) > 1024:
            self._verified.clear()
        self._verified[raw] = (subject, float(claims["exp"]))
        return subject


class IdentifiedBus:
    """A service's view of the bus: signs what it publishes, checks what it consumes."""

    def __init__(self, inner: Bus, identity: ServiceIdentity) -> None:
        self._inner = inner
        self._identity = identity

    async def declare(self, topology: Topology) -> None:
        await self._inner.declare(topology)

    async def declare_reply_queue(self) -> str:
        return await self._inner.declare_reply_queue()

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        await self._inner.bind(queue, exchange, pattern)

    async def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      headers: Mapping[str, Any] | None = None) -> None:
        signed = {**(headers or {}), HEADER: self._identity.token()}
        await self._inner.publish(exchange, routing_key, body, message_id=message_id,
                                  correlation_id=correlation_id, reply_to=reply_to, headers=signed)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 16,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if queue in PUBLIC_QUEUES:
            await self._inner.consume(queue, handler, prefetch=prefetch, task_status=task_status)
            return

        async def checked(delivery: Delivery) -> None:
            # a message retried later after an outage was sent (and checked) before it waited:
            # its identity may have expired in a retry queue meanwhile
            first = delivery.attempt.first_failure
            leeway = min(MAX_RETRY_LEEWAY, max(0.0, time.time() - first)) if first is not None else 0.0
            try:
                self._identity.check(delivery.headers, leeway=leeway)
            except Reject as exc:
                log.warning("internal message without a valid service identity", queue=queue,
                            routing_key=delivery.routing_key, reason=str(exc))
                await audit.record(self, service=self._identity.service, subject="unknown",
                                   action="message.rejected", outcome="dead_lettered",
                                   error_code="AUTH_INVALID",
                                   detail={"queue": queue, "routing_key": delivery.routing_key[:200],
                                           "reason": str(exc)[:300]})
                raise
            await handler(delivery)

        await self._inner.consume(queue, checked, prefetch=prefetch, task_status=task_status)

    def __getattr__(self, name: str) -> Any:  # transport extras (queue_depth, depth) pass through
        return getattr(self._inner, name)
