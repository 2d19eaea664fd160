"""What the per-message service identity costs: one signature per publish, one verification per
delivery, against the throughput budget (~20 ms CPU per whole device clear).

Usage: .venv/bin/python benchmarks/identity.py [-n 20000]

Measures, on this machine's CPU, signing and verifying a typical message (a step's audit record,
~400 bytes), a 64 KiB message (the largest a service accepts), and the old bearer-JWT header's
verification for comparison; then the cost for one device clear, which exchanges about 48
internal messages (a three-type UKey: request, events, audit records, device commands and
replies, backup, bureau), each signed once and verified once by every consuming queue.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from shared.authz.identity import ServiceIdentity, ServiceKeys
from shared.bus.api import Delivery
from shared.bus.topology import AUDIT, BACKUP, COMMANDS

MESSAGES_PER_DEVICE_CLEAR = 48  # counted on a one-device clear (tests/support/system.py's HookedBus)
SMALL = (b'{"record_id": "step:web-0123456789abcdef:661500000001:reported", "service": "coordinator", '
         b'"subject": "ops", "action": "step.reported", "request_id": "web-0123456789abcdef", '
         b'"device_id": "661500000001", "branch_id": "wuhan-hankou", "outcome": "done", '
         b'"trace_id": "0123456789abcdef0123456789abcdef", "detail": {}, "at": "2026-11-03T09:00:00+00:00"}')
LARGE = b'{"pad": "' + b"x" * (64 * 1024 - 12) + b'"}'


def per_call(fn: object, n: int) -> float:
    """Microseconds per call of `fn` (no arguments), best of three rounds."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20000)
    n = parser.parse_args().n
    keys = ServiceKeys(Path(tempfile.mkdtemp()) / "services")
    coordinator, audit = ServiceIdentity(keys, "coordinator"), ServiceIdentity(keys, "audit")
    rows = []
    for name, body, queue, key in (("audit record, 0.4 KiB", SMALL, AUDIT.name, "audit.record"),
                                   ("64 KiB message", LARGE, BACKUP.name, "backup.take")):
        headers = coordinator.sign(COMMANDS, key, body, message_id="m-1")
        delivery = Delivery(COMMANDS, key, body, message_id="m-1", headers=headers)
        audit.verify(queue, delivery)  # warm the public-key cache, as a running service has it
        sign = per_call(lambda body=body, key=key: coordinator.sign(COMMANDS, key, body, message_id="m-1"), n)
        verify = per_call(lambda queue=queue, delivery=delivery: audit.verify(queue, delivery), n)
        rows.append((name, sign, verify))
    print(f"{'message':<24}{'sign µs':>10}{'verify µs':>12}")
    for name, sign, verify in rows:
        print(f"{name:<24}{sign:>10.1f}{verify:>12.1f}")
    sign, verify = rows[0][1], rows[0][2]
    per_clear = MESSAGES_PER_DEVICE_CLEAR * (sign + verify) / 1000
    print(f"one device clear: {MESSAGES_PER_DEVICE_CLEAR} messages x (sign + verify) = {per_clear:.1f} ms CPU "
          f"({per_clear / 20 * 100:.0f}% of a 20 ms budget)")


if __name__ == "__main__":
    main()
