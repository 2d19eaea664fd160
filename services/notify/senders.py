"""Email (SMTP) and webhook delivery; blocking stdlib clients run in worker threads."""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import trio


class SendFailed(Exception):
    """The SMTP server or webhook did not take the notification (the event comes back later)."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "clearcard@localhost"
    timeout: float = 10.0


def _send_mail(config: SmtpConfig, to: str, subject: str, text: str, message_id: str | None) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = config.sender, to, subject
    if message_id:  # the same on a resend: mail clients show a repeat once
        message["Message-ID"] = f"<{message_id}@clearcard>"
    message.set_content(text)
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
        smtp.send_message(message)


def _post(url: str, payload: dict[str, Any], timeout: float, idempotency_key: str | None) -> None:
    headers = {"content-type": "application/json"}
    if idempotency_key:  # the same on every attempt: a receiver that saw it drops the repeat
        headers["Idempotency-Key"] = idempotency_key
    request = urllib.request.Request(url, data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status >= 300:
                raise SendFailed(f"webhook answered {response.status}")
    except urllib.error.HTTPError as exc:  # it holds the response open: close it before retrying later
        exc.close()
        raise SendFailed(f"webhook answered {exc.code}") from None


async def send_email(config: SmtpConfig, to: str, subject: str, text: str, *, message_id: str | None = None) -> None:
    try:
        await trio.to_thread.run_sync(_send_mail, config, to, subject, text, message_id)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendFailed(f"SMTP {config.host}:{config.port}: {exc}") from exc


async def post_webhook(url: str, payload: dict[str, Any], *, idempotency_key: str | None = None) -> None:
    try:
        # a thread cannot be cancelled: bound it here
        await trio.to_thread.run_sync(_post, url, payload, 10.0, idempotency_key)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise SendFailed(f"webhook {url}: {exc}") from exc
