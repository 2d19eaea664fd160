"""`clearcard dlq list / show / replay`: dead-lettered messages, for operators. Every use is audited.

The tools act as the admin named by `--token` (CLEARCARD_TOKEN) or, without one, as
`local:<os user>`: whoever holds this host's broker and database URLs and signing keys. They
need the broker (CLEARCARD_AMQP_URL): the in-process bus of `clearcard demo` lives and dies with
its process, and its dead letters are in that process's console.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from clearcard.commands.common import JsonOpt, err, fail, out, print_json
from shared.config import Settings

T = TypeVar("T")
SERVICE = "cli"  # the command line's service identity (shared/bus/senders.py)

app = typer.Typer(help="Dead-lettered messages: list the queues holding some, show them, replay them.",
                  no_args_is_help=True)
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="CLEARCARD_TOKEN",
                                              help="An admin's bearer token (acts as that admin).")]
QueueArg = Annotated[str, typer.Argument(help="The work queue (`auth.requests`, `clearcard.audit`) or its "
                                              "dead-letter queue (`clearcard.audit.dead`).")]
IdsOpt = Annotated[list[str] | None, typer.Option("--id", help="A message id; repeatable.")]




def _run(token: str | None, action: str, work: Callable[[Any, str, list[str]], Awaitable[T]],
         detail: Callable[[T], dict[str, Any]]) -> T:
    """Run `work(bus, actor, gateway_ids)` on the broker as the acting operator, and audit `action`."""
    from clearcard.runtime import identified, infrastructure, run_async
    from shared import audit
    from shared.authz import Action, Authorizer, KeyRing
    from shared.bus.api import BusError
    from shared.errors import ClearCardError

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise fail(f"configuration error: {exc}", 2) from None
    if settings.embedded_bus:
        raise fail("the dead-letter tools need the broker: set CLEARCARD_AMQP_URL (the in-process bus "
                    "of `clearcard demo` keeps its dead letters in that process's console)", 2)

    async def main() -> T | Exception:
        # errors are returned, not raised: trio-asyncio's loop would wrap them in an ExceptionGroup
        try:
            async with infrastructure(settings) as (raw, db):
                bus = identified(raw, SERVICE, settings)
                actor = f"local:{getpass.getuser()}"
                if token:
                    try:
                        actor = (await Authorizer(KeyRing(settings.keys_dir), db).decide(
                            f"Bearer {token}", Action.ADMIN)).subject
                    except ClearCardError as exc:
                        await audit.record(bus, service=SERVICE, subject="anonymous", action=action,
                                           outcome="rejected", error_code=exc.code, detail={"reason": exc.message})
                        raise
                gateways = [r["gateway_id"] for r in await db.fetch("SELECT DISTINCT gateway_id FROM devices")]
                result = await work(bus, actor, gateways)
                await audit.record(bus, service=SERVICE, subject=actor, action=action, outcome="ok",
                                   detail=detail(result))
                return result
        except (ClearCardError, BusError) as exc:
            return exc

    result = run_async(main)
    if isinstance(result, Exception):
        raise fail(str(result))
    return result




@app.command("list")
def list_queues(token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every dead-letter queue, with how many messages it holds."""
    from shared.bus import dead_letters

    async def work(bus: Any, _: str, gateways: list[str]) -> list[dead_letters.QueueCount]:
        return await dead_letters.counts(bus, gateways)

    found = _run(token, "dlq.list", work, lambda r: {"queues": len(r), "messages": sum(q.messages for q in r)})
    if as_json:
        print_json([{"queue": q.queue, "dead_letter_queue": q.dead_letter_queue, "messages": q.messages}
                     for q in found])
        return
    table = Table("dead-letter queue", "messages")
    for q in found:
        table.add_row(q.dead_letter_queue, str(q.messages))
    out.print(table)
    out.print(f"{sum(q.messages for q in found)} dead-lettered message(s)")


@app.command()
def show(queue: QueueArg, ids: IdsOpt = None,
         limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, oldest first.")] = 20,
         token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The dead letters of a queue: where each came from, why it was given up, what it holds."""
    from shared.bus import dead_letters

    async def work(bus: Any, _: str, __: list[str]) -> list[dead_letters.DeadLetter]:
        return await dead_letters.show(bus, queue, limit=limit, message_ids=set(ids) if ids else None)

    letters = _run(token, "dlq.show", work, lambda r: {"queue": dead_letters.work_queue_of(queue),
                                                        "message_ids": [x.message_id for x in r]})
    if as_json:
        print_json([letter.as_json() for letter in letters])
        return
    for letter in letters:
        out.print(f"[bold]{letter.message_id}[/bold]  {letter.routing_key}  dead since {letter.dead_at or '?'}")
        out.print(f"  why: {letter.reason}", markup=False)
        if letter.retries:
            out.print(f"  retried {letter.retries} times since {letter.first_failure}", markup=False)
        out.print(f"  body ({letter.size} bytes): {letter.body[:300]}", markup=False)
    out.print(f"{len(letters)} shown")


@app.command()
def replay(queue: QueueArg, ids: IdsOpt = None,
           replay_all: Annotated[bool, typer.Option("--all", help="Every dead letter of the queue.")] = False,
           limit: Annotated[int, typer.Option(min=1, help="With --all: at most this many.")] = 1000,
           token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Send dead letters back to their queue (fresh retry budget, same message id: never applied twice)."""
    from shared.bus import dead_letters

    if not ids and not replay_all:
        raise fail("name the messages with --id (see `clearcard dlq show`) or give --all", 2)

    async def work(bus: Any, actor: str, _: list[str]) -> list[dead_letters.DeadLetter]:
        from shared.authz.vouchers import vouch

        # each message goes out as its sender signed it, with this tool's voucher for the replay
        return await dead_letters.replay(bus, queue, replayed_by=actor, message_ids=set(ids) if ids else None,
                                         limit=limit, publisher=bus.unsigned,
                                         seal=lambda q, headers: vouch(bus.identity, "replay", q, headers))

    letters = _run(token, "dlq.replay", work, lambda r: {"queue": dead_letters.work_queue_of(queue),
                                                          "message_ids": [x.message_id for x in r]})
    if as_json:
        print_json({"queue": dead_letters.work_queue_of(queue), "replayed": [x.message_id for x in letters]})
        return
    out.print(f"replayed {len(letters)} message(s) to {dead_letters.work_queue_of(queue)}")
    missing = sorted(set(ids or ()) - {x.message_id for x in letters})
    if missing:
        err.print(f"not found in the dead-letter queue: {', '.join(missing)}")
