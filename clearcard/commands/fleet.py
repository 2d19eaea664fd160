"""`clearcard fleet clear` and `clearcard fleet cancel`: operations across many branches."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated, Any

import trio
import typer
from rich.console import Console

from clearcard.lang import error_line
from shared.config import Settings

app = typer.Typer(help="Fleet operations: clears across branches with filters, cancelling.", no_args_is_help=True)
err = Console(stderr=True)


async def _run(settings: Settings, token: str, routing_key: str, body: dict[str, Any], answer_id: str,
               follow: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Publish one command and collect its answer (and, with `follow`, every request's final event)."""
    from clearcard.runtime import ALL, infrastructure, start_services
    from shared.bus.api import Delivery
    from shared.bus.topology import COMMANDS, EVENTS

    answer: dict[str, Any] = {}
    finished: dict[str, dict[str, Any]] = {}
    done = trio.Event()

    async with infrastructure(settings) as (bus, db), trio.open_nursery() as nursery:
        if settings.embedded_bus:
            await start_services(nursery, ALL, bus, db, settings)
        queue = await bus.declare_reply_queue()
        for pattern in ("fleet.*", "clear.*"):
            await bus.bind(queue, EVENTS, pattern)

        async def on_event(delivery: Delivery) -> None:
            event = json.loads(delivery.body)
            if event.get("request_id") == answer_id and event["event"] in (
                    "fleet.accepted", "fleet.rejected", "clear.cancelled"):
                answer.update(event)
            elif event["event"] == "clear.finished" and event.get("request_id") in answer.get("requests", []):
                finished[event["request_id"]] = event
            if answer and (not follow or answer["event"] != "fleet.accepted"
                           or len(finished) == len(answer["requests"])):
                done.set()

        await nursery.start(lambda task_status: bus.consume(queue, on_event, prefetch=1, task_status=task_status))
        await bus.publish(COMMANDS, routing_key, json.dumps(body).encode(), message_id=answer_id,
                          headers={"authorization": f"Bearer {token}"})
        await done.wait()
        nursery.cancel_scope.cancel()
    return answer, list(finished.values())


def _token(settings: Settings, token: str | None) -> str:
    from clearcard.clear_command import _local_token

    return token or _local_token(settings)


@app.command("clear")
def fleet_clear(
    branch: Annotated[list[str] | None, typer.Option(help="Branch ('*' = every branch); repeatable.")] = None,
    period: Annotated[str | None, typer.Option(help="YYYY-MM; default: each device's last closed period.")] = None,
    family: Annotated[list[str] | None, typer.Option(help="ukey, golden_tax_disk, tax_control_disk.")] = None,
    invoice_type: Annotated[list[str] | None, typer.Option("--type", help="Invoice type codes.")] = None,
    status: Annotated[list[str] | None, typer.Option(help="needs_report, reported, cleared.")] = None,
    within_days: Annotated[int | None, typer.Option(help="Only devices whose lock date is within N days.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow every request to its end.")] = True,
    token: Annotated[str | None, typer.Option(envvar="CLEARCARD_TOKEN", help="Bearer token.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Clear every matching device across branches; exit 0 only if every request succeeded."""
    from clearcard.runtime import run_async
    from shared.messages.fleet import FLEET_CLEAR

    settings = Settings.from_env()
    fleet_id = f"fleet-{uuid.uuid4().hex[:12]}"
    filters = {"branches": branch or ["*"], "families": family or [], "invoice_types": invoice_type or [],
               "statuses": status or [], "within_days": within_days}
    body = {"fleet_id": fleet_id, "period": period, "filters": filters}
    answer, finished = run_async(lambda: _run(settings, _token(settings, token), FLEET_CLEAR, body, fleet_id, wait))
    if as_json:
        sys.stdout.write(json.dumps({"answer": answer, "finished": finished}) + "\n")
    elif answer["event"] == "fleet.rejected":
        err.print(f"rejected: {error_line({'code': answer['error_code'], 'message': answer['message']})}")
    else:
        err.print(f"{len(answer['requests'])} request(s) for {answer['devices']} device(s)")
        for event in finished:
            err.print(f"  {event['request_id']}: {event['status']}")
    ok = answer.get("event") == "fleet.accepted" and all(e["status"] == "succeeded" for e in finished)
    raise typer.Exit(0 if ok else 1)


@app.command("cancel")
def cancel(
    request_id: str,
    token: Annotated[str | None, typer.Option(envvar="CLEARCARD_TOKEN", help="Bearer token.")] = None,
) -> None:
    """Cancel a clear before any write-back; devices not yet written back end `skipped`."""
    from clearcard.runtime import run_async
    from shared.messages.fleet import CLEAR_CANCEL

    settings = Settings.from_env()
    answer, _ = run_async(lambda: _run(settings, _token(settings, token), CLEAR_CANCEL,
                                       {"request_id": request_id}, request_id, False))
    err.print(answer.get("message") or ("cancelled" if answer.get("accepted") else "not cancelled"))
    raise typer.Exit(0 if answer.get("accepted") else 1)
