"""A real SMTP server (aiosmtpd) in its own process: prints each message as a JSON line.

Run in a child process because trio-asyncio owns asyncio's loop policy in the test process.
"""

from __future__ import annotations

import json
import sys
import time
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        body = message.get_payload(decode=True) or b""
        sys.stdout.write(json.dumps({"to": envelope.rcpt_tos, "subject": message["Subject"],
                                     "text": body.decode("utf-8", "replace")}) + "\n")
        sys.stdout.flush()
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)
