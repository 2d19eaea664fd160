"""Ways to reach devices besides the local pyusb backend: USB/IP servers (USB-sharing cabinets).

Every transport is a pyusb backend (`usb.backend.IBackend`), so the family drivers run on it
unchanged. `parse_servers` reads `CLEARCARD_USBIP_SERVERS` (see docs/device-protocol.md, "USB
over the network"). The USB/IP modules import the `usbip` package; import them only when a
server is configured.
"""

from __future__ import annotations

USBIP_PORT = 3240  # the port usbipd listens on when none is given


def parse_servers(text: str | None) -> list[tuple[str, int]]:
    """`host:port,host:port` (port defaults to 3240; `[v6 address]:port`) -> [(host, port)].

    Raises ValueError naming the bad entry; empty text means no servers.
    """
    servers: list[tuple[str, int]] = []
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, port = entry, USBIP_PORT
        if entry.startswith("["):
            close = entry.find("]")
            rest = entry[close + 1:] if close > 0 else ""
            if close < 0 or (rest and not rest.startswith(":")):
                raise ValueError(f"USB/IP server {entry!r} is not host:port")
            host = entry[1:close]
            if rest:
                port = _port(entry, rest[1:])
        elif entry.count(":") == 1:
            host, _, text_port = entry.partition(":")
            port = _port(entry, text_port)
        elif ":" in entry:
            raise ValueError(f"USB/IP server {entry!r}: write an IPv6 address as [address]:port")
        if not host:
            raise ValueError(f"USB/IP server {entry!r} has no host")
        if (host, port) not in servers:
            servers.append((host, port))
    return servers


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"USB/IP server {entry!r}: the port must be a number from 1 to 65535")
    return int(text)


__all__ = ["USBIP_PORT", "parse_servers"]
