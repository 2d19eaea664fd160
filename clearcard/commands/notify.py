"""`clearcard notify ...`: who is told about a branch's failures and lock-date warnings."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

app = typer.Typer(help="Notification contacts per branch (email, webhooks).", no_args_is_help=True)


@app.command("set")
def set_contacts(
    branch: Annotated[str, typer.Option(help="Branch ('*' = every branch).")],
    email: Annotated[list[str] | None, typer.Option(help="An email address; repeatable.")] = None,
    webhook: Annotated[list[str] | None, typer.Option(help="An http(s) URL; repeatable.")] = None,
) -> None:
    """Replace the branch's contacts with the ones given (none given: remove them)."""
    from clearcard.runtime import infrastructure, run_async
    from services.notify import store
    from shared.config import Settings

    contacts = [("email", e) for e in email or []] + [("webhook", w) for w in webhook or []]
    for kind, address in contacts:
        if kind == "webhook" and not address.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{address!r} is not an http(s) URL")
        if kind == "email" and "@" not in address:
            raise typer.BadParameter(f"{address!r} is not an email address")

    async def main() -> None:
        async with infrastructure(Settings.from_env()) as (_, db):
            await db.run(store.set_contacts, branch, contacts)

    run_async(main)


@app.command("list")
def list_contacts(as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False) -> None:
    """Every branch's contacts."""
    from clearcard.runtime import infrastructure, run_async
    from services.notify import store
    from shared.config import Settings

    async def main() -> list[store.Contact]:
        async with infrastructure(Settings.from_env()) as (_, db):
            return await db.run(store.all_contacts)

    rows = run_async(main)
    if as_json:
        sys.stdout.write(json.dumps([r.__dict__ for r in rows]) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r.branch_id}\t{r.kind}\t{r.address}\n")
