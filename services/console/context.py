"""What every console route works with: the bus, the database, keys, the authorizer and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from services.console.events import EventHub
from shared.authz import Authorizer, KeyRing
from shared.bus.api import Bus
from shared.bus.rpc import RpcClient
from shared.config import Settings
from shared.db.pool import Database


@dataclass
class ConsoleContext:
    """Owned by `run_console`; routes get it through `Depends(context)`."""

    bus: Bus
    db: Database
    settings: Settings
    keys: KeyRing
    hub: EventHub
    rpc: RpcClient | None = None  # device commands (monitoring data); None when not connected
    authorizer: Authorizer = field(init=False)  # the one decision, over `keys` and `db`
    readings: dict[str, Any] = field(default_factory=dict)  # cached readings for scrapers (routes_ops)

    def __post_init__(self) -> None:
        self.authorizer = Authorizer(self.keys, self.db)


def context(request: Request) -> ConsoleContext:
    """FastAPI dependency: the console's context."""
    ctx: ConsoleContext = request.app.state.ctx
    return ctx
