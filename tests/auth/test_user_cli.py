"""`clearcard user ...` and `clearcard audit search|anomalies` as separate processes on a real database."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyotp
import trio

from shared.db import Database

RUN = "import sys; from clearcard.commands.{module} import app; app(sys.argv[1:], prog_name='clearcard')"


async def run(env: dict[str, str], module: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-c", RUN.format(module=module), *args], env=env,
                                      stdin=stdin.encode(), check=False, capture_stdout=True,
                                      capture_stderr=True)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_accounts_from_the_command_line(database: Database, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATABASE_URL=database.dsn, CLEARCARD_DATA_DIR=str(tmp_path / "data"))
    code, out, err = await run(env, "user", "add", "li.wei", "--role", "operator", "--branch", "wuhan",
                               "--password-stdin", "--json", stdin="a long passphrase\n")
    assert code == 0, err
    assert json.loads(out)["kind"] == "person"
    code, out, err = await run(env, "user", "add", "erp", "--kind", "service", "--role", "operator",
                               "--branch", "wuhan", "--password-stdin", stdin="service secret 123\n")
    assert code == 2 and "service account may hold" in err
    for _ in range(5):
        code, out, err = await run(env, "user", "login", "li.wei", "--password-stdin", stdin="wrong guess!!\n")
        assert code == 1 and "AUTH_INVALID" in err
    code, out, _ = await run(env, "user", "list", "--json")
    [account] = json.loads(out)
    assert account["failed_logins"] == 5 and account["locked_until"]
    code, _, err = await run(env, "user", "login", "li.wei", "--password-stdin", stdin="a long passphrase\n")
    assert code == 1 and "locked" in err
    assert (await run(env, "user", "unlock", "li.wei"))[0] == 0
    code, uri, _ = await run(env, "user", "totp", "enroll", "li.wei")
    assert code == 0 and uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri.strip()).now()
    code, token, err = await run(env, "user", "login", "li.wei", "--totp", totp, "--password-stdin",
                                 stdin="a long passphrase\n")
    assert code == 0, err
    assert (await run(env, "user", "token", "revoke", token.strip()))[0] == 0
    code, reset, _ = await run(env, "user", "reset", "li.wei")
    code, _, err = await run(env, "user", "reset-password", "--reset-token", reset.strip(), "--password-stdin",
                             stdin="another passphrase\n")
    assert code == 0, err
    code, _, err = await run(env, "user", "disable", "li.wei")
    assert code == 0, err
    # an operator's token may not administer
    code, _, err = await run(env, "user", "unlock", "li.wei", "--token", token.strip())
    assert code == 1 and "AUTH_INVALID" in err  # revoked above

    code, out, err = await run(env, "audit_review", "search", "--subject", "li.wei", "--json")
    assert code == 0, err
    actions = [(r["action"], r["outcome"]) for r in json.loads(out)]
    assert actions.count(("auth.login", "failed")) == 5 and ("auth.lockout", "locked") in actions
    assert ("auth.login", "refused") in actions and ("auth.login", "ok") in actions
    code, out, err = await run(env, "audit_review", "anomalies", "--json")
    assert code == 0, err
    kinds = {(a["kind"], a.get("subject")) for a in json.loads(out)}
    assert ("rejection_burst", "li.wei") in kinds
