"""Email (SMTP with STARTTLS or implicit TLS, and login) and signed webhook delivery.

Blocking stdlib clients run in worker threads. Nothing here puts an address, a URL (webhook
URLs often carry tokens) or a secret into an exception message or a log line: failures name
the endpoint by a short fingerprint (`endpoint_label`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

import trio

SIGNATURE_HEADER = "X-ClearCard-Signature"
TIMESTAMP_HEADER = "X-ClearCard-Timestamp"
SIGNATURE_VERSION = "v1"


class SendFailed(Exception):
    """The SMTP server or webhook did not take the notification (the event comes back later)."""


def endpoint_label(address: str) -> str:
    """How logs name an email address or webhook URL: a fingerprint, never the address itself."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "clearcard@localhost"
    timeout: float = 10.0
    tls: Literal["none", "starttls", "tls"] = "none"  # tls = implicit TLS (SMTPS, usually port 465)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # a private CA for the server's certificate; else the system's

    def __post_init__(self) -> None:
        if self.username and self.tls == "none":
            raise ValueError("SMTP login needs TLS: set CLEARCARD_SMTP_TLS to starttls or tls")

    def __repr__(self) -> str:  # never the password
        return f"SmtpConfig(host={self.host!r}, port={self.port}, tls={self.tls!r}, user={bool(self.username)})"


def _context(config: SmtpConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=config.ca_file)  # certificate and host name verified


def _send_mail(config: SmtpConfig, to: str, subject: str, text: str, message_id: str | None) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = config.sender, to, subject
    if message_id:  # the same on a resend: mail clients show a repeat once
        message["Message-ID"] = f"<{message_id}@clearcard>"
    message.set_content(text)
    smtp: smtplib.SMTP
    if config.tls == "tls":
        smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=_context(config))
    else:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with smtp:
        if config.tls == "starttls":
            smtp.starttls(context=_context(config))  # fails if the server does not offer it
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.send_message(message)


async def send_email(config: SmtpConfig, to: str, subject: str, text: str, *, message_id: str | None = None) -> None:
    """Send one email; SendFailed (without the address) when the server does not take it."""
    try:
        await trio.to_thread.run_sync(_send_mail, config, to, subject, text, message_id)
    except smtplib.SMTPAuthenticationError as exc:
        raise SendFailed(f"SMTP {config.host}:{config.port} refused the login ({exc.smtp_code})") from None
    except smtplib.SMTPException as exc:
        raise SendFailed(f"SMTP {config.host}:{config.port}: {type(exc).__name__}") from None
    except (OSError, ssl.SSLError) as exc:
        raise SendFailed(f"SMTP {config.host}:{config.port}: {type(exc).__name__}: {exc.strerror or exc}") from None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 of `timestamp`, '.', and the body, under the secret."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance: float = 300.0) -> bool:
    """What a receiver checks (docs/operations.md has the same in a few lines)."""
    fresh = abs((time.time() if now is None else now) - float(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status >= 300:
                raise SendFailed(f"webhook {endpoint_label(url)} answered {response.status}")
    except urllib.error.HTTPError as exc:  # it holds the response open: close it before retrying later
        exc.close()
        raise SendFailed(f"webhook {endpoint_label(url)} answered {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else type(exc.reason).__name__
        raise SendFailed(f"webhook {endpoint_label(url)} unreachable: {reason}") from None


async def post_webhook(url: str, payload: dict[str, Any], secret: str | None, *,
                       idempotency_key: str | None = None) -> None:
    """POST the JSON payload, signed with the endpoint's secret when it has one.

    `idempotency_key` is the same on every attempt at one notification to one endpoint, so a
    receiver that already took it can drop the repeat (`Idempotency-Key` header).
    """
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"content-type": "application/json", "user-agent": "ClearCard-Notify/1"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    if secret:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    try:
        await trio.to_thread.run_sync(_post, url, body, headers, 10.0)  # a thread cannot be cancelled: bound it
    except OSError as exc:
        raise SendFailed(f"webhook {endpoint_label(url)}: {type(exc).__name__}") from None
