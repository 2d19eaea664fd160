"""The coordinator's tunables, read from the environment (tests shorten the lease and deadlines)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CoordinatorConfig:
    lease_seconds: float = 15.0  # renewed every lease/4 while a device is driven
    gateway_deadline: float = 60.0
    service_deadline: float = 30.0
    retry_attempts: int = 3
    max_in_flight: int = 1000
    # device clears driven at once per gateway and per branch (per replica): by default as many
    # as the replica holds, so a fleet of slow devices is bound by nothing but CPU
    per_gateway: int = 1000
    per_branch: int = 1000
    poll_interval: float = 1.0  # looking for expired leases
    relay_poll: float = 0.2  # the outbox relay, when nothing woke it
    scheduler: int = 0  # 1: this deployment schedules clears itself (the leader opens each window)
    schedule_tick: float = 60.0  # the scheduler's look at the calendar
    retry_every: float = 15 * 60.0  # transient failures are retried on this period until the lock date
    # the bureau's filing and comparison of devices whose period is closed and not yet passed are
    # asked again this often (devices awaiting a pending comparison: every `retry_every`)
    bureau_refresh: float = 15 * 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CoordinatorConfig:
        """CLEARCARD_COORDINATOR_<FIELD> overrides each field (e.g. ..._LEASE_SECONDS=3)."""
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for name, field in cls.__dataclass_fields__.items():
            raw = env.get(f"CLEARCARD_COORDINATOR_{name.upper()}", "").strip()
            if raw:
                values[name] = int(raw) if field.type in ("int", int) else float(raw)
        return cls(**values)  # type: ignore[arg-type]
