"""A real SMTP server (aiosmtpd) in its own process: prints each message as a JSON line.

    smtp_sink.py PORT                              plain SMTP, no login
    smtp_sink.py PORT CERT KEY USER PASSWORD       STARTTLS required, then AUTH LOGIN/PLAIN required

Run in a child process because trio-asyncio owns asyncio's loop policy in the test process.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)  # headers unfolded
        body = message.get_payload(decode=True) or b""
        sys.stdout.write(json.dumps({"to": envelope.rcpt_tos, "subject": str(message["Subject"]).strip(),
                                     "text": body.decode("utf-8", "replace"),
                                     "tls": session.ssl is not None,
                                     "login": session.auth_data.login.decode() if session.auth_data else None})
                         + "\n")
        sys.stdout.flush()
        return "250 OK"


def authenticator(user: str, password: str) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


if __name__ == "__main__":
    port = int(sys.argv[1])
    options: dict[str, Any] = {}
    if len(sys.argv) > 2:
        cert, key, user, password = sys.argv[2:6]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        options = {"tls_context": context, "require_starttls": True, "auth_required": True,
                   "auth_require_tls": True, "authenticator": authenticator(user, password)}
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, **options)
    controller.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)
