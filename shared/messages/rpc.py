"""The envelope of internal request/reply commands (gateway, backup, bureau)."""

from __future__ import annotations

from typing import Any

from shared.messages.base import Frozen
from shared.messages.clear import Error


class Reply(Frozen):
    """Answer to a command: either `result` (the op's reply model as JSON) or `error`."""

    ok: bool
    result: dict[str, Any] | None = None
    error: Error | None = None
    # the service could not reach its database or broker: nothing is wrong with the command,
    # the caller waits and sends it again (shared/outages.py ServiceOutage)
    outage: bool = False
