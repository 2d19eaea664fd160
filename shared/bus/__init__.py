"""The message bus: one interface, two implementations (RabbitMQ and in-memory).

Semantics both keep (the contract suite in tests/bus checks them):

- `publish` returns once the broker has taken responsibility for the message
  (publisher confirm); it raises `BusError` if it could not.
- `consume` runs until cancelled. A delivery is acked after its handler returns; a handler
  raising `Reject` (or `DecodeError`) dead-letters it at once; a database or broker outage (or
  `RetryLater`) parks it in a retry queue, back after a growing delay for hours
  (`shared/bus/retry.py`); any other exception returns it to the queue at once, and after the
  queue's delivery limit it is dead-lettered.
- Trace context travels in the AMQP headers (W3C `traceparent`).
"""

from shared.bus.api import (
    Bus,
    BusError,
    Delivery,
    Handler,
    Reject,
    RetryLater,
)

__all__ = ["Bus", "BusError", "Delivery", "Handler", "Reject", "RetryLater"]
