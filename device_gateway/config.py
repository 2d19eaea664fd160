"""The gateway's own environment variables (beyond shared/config.py's Settings).

- `CLEARCARD_USBIP_SERVERS`: comma-separated `host:port` of USB/IP servers (USB-sharing
  cabinets) whose exported devices the gateway reaches besides its local ones.
- `CLEARCARD_LIBUSB`: the libusb-1.0 shared library to drive the host's USB devices with, where
  the system's library search does not find it (device_gateway/transports/libusb.py).
- `CLEARCARD_GATEWAY_SHARDS`: the number of shard queues when several replicas serve one
  gateway id (docs/device-protocol.md, "Several gateway replicas"); unset or 0: no sharding.

`CLEARCARD_GATEWAY_ID` is read by shared/config.py (`Settings.gateway_id`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from device_gateway.transports import parse_servers
from device_gateway.transports.libusb import ENV_LIBUSB
from shared.errors import ConfigurationError

ENV_USBIP_SERVERS = "CLEARCARD_USBIP_SERVERS"
ENV_SHARDS = "CLEARCARD_GATEWAY_SHARDS"
MAX_SHARDS = 256


class GatewayConfigError(ConfigurationError, ValueError):
    """A gateway variable has a value the gateway cannot use; the message names it."""


@dataclass(frozen=True)
class GatewayEnv:
    usbip_servers: tuple[tuple[str, int], ...] = ()
    shards: int = 0
    libusb: str | None = None  # None: found through the system's library search

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayEnv:
        """Read the variables; a bad value raises GatewayConfigError (a ValueError) naming the variable."""
        env = os.environ if environ is None else environ
        try:
            servers = tuple(parse_servers(env.get(ENV_USBIP_SERVERS)))
        except ValueError as exc:
            raise GatewayConfigError(f"{ENV_USBIP_SERVERS}: {exc}") from None
        raw = env.get(ENV_SHARDS, "").strip()
        if raw and (not raw.isdigit() or int(raw) > MAX_SHARDS):
            raise GatewayConfigError(f"{ENV_SHARDS} must be a whole number from 0 to {MAX_SHARDS}, got {raw!r}")
        return cls(usbip_servers=servers, shards=int(raw) if raw else 0,
                   libusb=env.get(ENV_LIBUSB, "").strip() or None)
