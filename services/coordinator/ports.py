"""The coordinator's commands to the gateway, backup service and bureau, with deadlines and retries.

Retry policy is data: only transient refusals are retried, a few times with backoff; a wrong
PIN or a failed comparison is a business answer and is never retried. An outage (the broker
unreachable, or the service answering that its database is) is no answer at all: it raises
`BusError` / `ServiceOutage` to the caller, which waits it out (shared/outages.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import trio
from pydantic import BaseModel

from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.errors import RETRIED_AT_ONCE, ClearCardError, ErrorCode

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    first_delay: float = 0.5
    max_delay: float = 10.0
    factor: float = 2.0
    retryable: frozenset[ErrorCode] = RETRIED_AT_ONCE


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Ports:
    rpc: RpcClient
    gateway_deadline: float = 60.0
    service_deadline: float = 30.0
    # a backup streams the whole period page by page, so it takes as long as the period is big;
    # the backup service bounds each page itself (services/backup/pages.py). Under RabbitMQ's
    # 30-minute consumer timeout, which would take the unacknowledged command back.
    backup_deadline: float = 900.0
    retry: RetryPolicy = DEFAULT_RETRY

    async def _call(self, routing_key: str, request: BaseModel, reply: type[R], deadline: float,
                    timeout_code: ErrorCode, party: str) -> R:
        delay = self.retry.first_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                with trio.fail_after(deadline):
                    return await self.rpc.call(COMMANDS, routing_key, request, reply)
            except trio.TooSlowError:
                error = ClearCardError(timeout_code, f"{party} did not answer within {deadline:g} s "
                                                     f"({self.retry.attempts} tries).")
            # BusError and ServiceOutage pass: an outage of the broker or of the service's database
            # is waited out by the caller (the runner retries the step), it spends no attempt
            except ClearCardError as exc:
                error = exc
            if error.code not in self.retry.retryable or attempt == self.retry.attempts:
                raise error
            await trio.sleep(delay)
            delay = min(delay * self.retry.factor, self.retry.max_delay)
        raise AssertionError("unreachable")

    async def gateway(self, gateway_id: str | None, op: str, request: BaseModel, reply: type[R]) -> R:
        """A device command through the gateway that owns the device (None: no gateway has seen it)."""
        if gateway_id is None:
            device = getattr(request, "device_id", "the device")
            raise ClearCardError(ErrorCode.DEVICE_OFFLINE,
                                 f"Device {device} is enrolled but no gateway has found it yet: plug it in "
                                 "at a gateway (a branch host or a USB-sharing cabinet).")
        return await self._call(gateway_routing_key(gateway_id, op), request, reply,
                                self.gateway_deadline, ErrorCode.TIMEOUT, "The device gateway")

    async def authority(self, op: str, request: BaseModel, reply: type[R]) -> R:
        """A bureau command; no answer in time means the bureau is unavailable."""
        return await self._call(f"authority.{op}", request, reply, self.service_deadline,
                                ErrorCode.AUTHORITY_UNAVAILABLE, "The tax bureau")

    async def backup(self, op: str, request: BaseModel, reply: type[R]) -> R:
        return await self._call(f"backup.{op}", request, reply, self.backup_deadline,
                                ErrorCode.TIMEOUT, "The backup service")
