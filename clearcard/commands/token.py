"""`clearcard token`: bearer tokens for services and scripts, signed with the local key."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from clearcard.commands.common import fail, settings_from_env

app = typer.Typer(help="Access tokens for services and scripts.", no_args_is_help=True)


@app.command("issue")
def token_issue(
    subject: Annotated[str, typer.Option(help="Who the token speaks for.")],
    role: Annotated[str, typer.Option(help="admin, operator, requester, auditor or viewer.")],
    branch: Annotated[list[str] | None, typer.Option(help="Branch in scope ('*' = all); repeatable.")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a signed bearer token (one line)."""
    from shared.authz.roles import Role
    from shared.authz.tokens import KeyRing

    try:
        parsed = Role(role)
    except ValueError:
        raise fail(f"unknown role {role!r}; choose from {', '.join(r.value for r in Role)}", 2) from None
    branches = branch or (["*"] if parsed == Role.ADMIN else [])
    try:
        token = KeyRing(settings_from_env().keys_dir).issue(subject, parsed, branches, ttl)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    sys.stdout.write(token + "\n")
