"""Vouchers: a signed "this message was fine" for one whose identity expired while it waited.

A service identity is good for minutes on a command queue (shared/bus/senders.py), but a message
whose handler met an outage is retried later for hours (shared/bus/retry.py), and an operator may
replay a dead letter days later. Neither may launder a forged or foreign message, so the message
keeps its original identity and gains a voucher, `x-clearcard-voucher: v1 <kind> <service> <ms>
<signature>`, an Ed25519 signature by the vouching service over its kind, the queue, the original
identity header and the time:

- `retry`: signed by the consuming service itself when the message first failed on an outage,
  just after it verified the message. Accepted by that same service on that queue while the
  retry budget lasts, if the original identity was valid *then*.
- `replay`: signed by an operator's tool (`cli`, `console`) replaying a dead letter. Accepted for
  minutes, if the original identity is authentic (valid as of its own signing time) and its
  service may send to the queue. An operator cannot make a message that no service sent.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature

from shared.authz.identity import HEADER, RouteCheck, ServiceIdentity
from shared.bus.api import Delivery, Reject, Sender
from shared.bus.senders import IDENTITY_TTL
from shared.bus.topology import RETRY_SCHEDULE

VOUCHER = "x-clearcard-voucher"
REPLAYERS = frozenset({"cli", "console"})  # the tools an operator replays dead letters with
RETRY_VOUCHER_TTL = RETRY_SCHEDULE.budget + 3600.0  # the longest a message waits in retry queues, and slack
_DOMAIN = "clearcard-voucher/1"


def _payload(kind: str, service: str, queue: str, identity: str, at_ms: int) -> bytes:
    return json.dumps([_DOMAIN, kind, service, queue, identity, at_ms], separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def vouch(identity: ServiceIdentity, kind: str, queue: str, headers: Mapping[str, Any], *,
          at: float | None = None) -> dict[str, str]:
    """The voucher header for a message on `queue` (none for a message without an identity), as of
    `at` (default now): for a retry, when the consumer verified the message."""
    original = headers.get(HEADER)
    if isinstance(original, bytes):
        original = original.decode("utf-8", "replace")
    if not isinstance(original, str) or not original:
        return {}
    at_ms = int((identity.clock() if at is None else at) * 1000)
    signature = identity.keys.private(identity.service).sign(
        _payload(kind, identity.service, queue, original, at_ms))
    encoded = base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")
    return {VOUCHER: f"v1 {kind} {identity.service} {at_ms} {encoded}"}


def vouched_sender(identity: ServiceIdentity, queue: str, delivery: Delivery,
                   leads_to: RouteCheck | None) -> Sender | None:
    """The sender of a message whose own identity is past its age, if a valid voucher covers it."""
    raw = delivery.headers.get(VOUCHER)
    original = delivery.headers.get(HEADER)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(original, bytes):
        original = original.decode("utf-8", "replace")
    if not isinstance(raw, str) or not isinstance(original, str):
        return None
    parts = raw.split(" ")
    if len(parts) != 5 or parts[0] != "v1" or not parts[3].isdigit():
        return None
    kind, service, at_ms, encoded = parts[1], parts[2], int(parts[3]), parts[4]
    age = identity.clock() - at_ms / 1000
    if kind == "retry" and service == identity.service and -30 <= age <= RETRY_VOUCHER_TTL:
        as_of = at_ms / 1000  # the message was good when it first failed
    elif kind == "replay" and service in REPLAYERS and -30 <= age <= IDENTITY_TTL:
        as_of = None  # authentic as of its own signing time
    else:
        return None
    key = identity.keys.public(service)
    if key is None:
        return None
    try:
        signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        key.verify(signature, _payload(kind, service, queue, original, at_ms))
    except (binascii.Error, ValueError, InvalidSignature):
        return None
    if as_of is None:
        signed = original.split(" ")
        if len(signed) != 4 or not signed[2].isdigit():
            return None
        as_of = int(signed[2]) / 1000
    then = ServiceIdentity(identity.keys, identity.service, clock=lambda: as_of)
    try:
        return then.verify(queue, delivery, leads_to)
    except Reject:
        return None
