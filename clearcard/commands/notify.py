"""`clearcard notify ...`: who is told about a branch's clears, lock-date warnings and abandoned devices."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

app = typer.Typer(help="Notification contacts per branch (email, signed webhooks).", no_args_is_help=True)


@app.command("set")
def set_contacts(
    branch: Annotated[str, typer.Option(help="Branch ('*' = every branch).")],
    email: Annotated[list[str] | None, typer.Option(help="An email address; repeatable.")] = None,
    webhook: Annotated[list[str] | None, typer.Option(help="An http(s) URL; repeatable.")] = None,
    summaries: Annotated[str | None, typer.Option(
        help="all: a summary of every clear request, successes too (the default); problems: only of "
             "requests that did not fully succeed; none: only failures, one notice per device.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Replace the branch's contacts with the ones given (none given: remove them).

    Each new webhook gets a signing secret, printed once here (keep it with the receiver): every
    POST carries X-ClearCard-Timestamp and X-ClearCard-Signature (docs/operations.md). A webhook
    kept from before keeps its secret.
    """
    import asyncpg

    from clearcard.runtime import infrastructure, run_async
    from services.notify import store
    from services.notify.secrets import SecretVault
    from shared.config import Settings

    contacts = [("email", e) for e in email or []] + [("webhook", w) for w in webhook or []]
    for kind, address in contacts:
        if kind == "webhook" and not address.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{address!r} is not an http(s) URL")
        if kind == "email" and "@" not in address:
            raise typer.BadParameter(f"{address!r} is not an email address")
    if summaries is not None and summaries not in store.SUMMARY_CHOICES:
        raise typer.BadParameter(f"--summaries must be one of {', '.join(store.SUMMARY_CHOICES)}")
    settings = Settings.from_env()
    vault = SecretVault.open(settings.keys_dir)
    fresh = {w: vault.new_secret() for w in webhook or []}

    async def main() -> list[str]:
        async with infrastructure(settings) as (_, db):
            async def unit(conn: asyncpg.Connection) -> list[str]:
                added = await store.set_contacts(conn, branch, contacts,
                                                 {w: vault.seal(s) for w, s in fresh.items()})
                if summaries is not None:
                    await store.set_summaries(conn, branch, summaries)
                return added

            return await db.run(unit)

    added = run_async(main)
    shown = {w: fresh[w] for w in added}
    if as_json:
        sys.stdout.write(json.dumps({"branch_id": branch, "webhook_secrets": shown}) + "\n")
        return
    for url, secret in shown.items():
        sys.stdout.write(f"webhook secret for {url}: {secret}\n")


@app.command("list")
def list_contacts(as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False) -> None:
    """Every branch's contacts (never their secrets)."""
    from clearcard.runtime import infrastructure, run_async
    from services.notify import store
    from shared.config import Settings

    async def main() -> list[store.Contact]:
        async with infrastructure(Settings.from_env()) as (_, db):
            return await db.run(store.all_contacts)

    rows = run_async(main)
    if as_json:
        sys.stdout.write(json.dumps([{"branch_id": r.branch_id, "kind": r.kind, "address": r.address}
                                     for r in rows]) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r.branch_id}\t{r.kind}\t{r.address}\n")
