"""What every console route works with: the bus, the database, keys and the event hub."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.auth.tokens import KeyRing
from services.console.events import EventHub
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


def context(request: Request) -> ConsoleContext:
    """FastAPI dependency: the console's context."""
    ctx: ConsoleContext = request.app.state.ctx
    return ctx
