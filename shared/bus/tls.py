"""TLS for the broker link: an `amqps://` URL is encrypted, with the broker's certificate verified.

pika takes an `ssl.SSLContext` and does the handshake through the same non-blocking I/O
interface as plain connections (pika's `io_services_utils`), so the trio adapter
(shared/bus/trio_nbio.py) carries TLS unchanged. The context verifies the broker's certificate
and host name against `CLEARCARD_AMQP_CA` (the system's CAs when unset) and presents a client
certificate (`CLEARCARD_AMQP_CERT`, `CLEARCARD_AMQP_KEY`) when given, for brokers that ask.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pika

from shared.bus.api import BusError
from shared.config import TlsFiles


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ client context verifying the server (certificate chain and host name)."""
    try:
        context = ssl.create_default_context(cafile=str(tls.amqp_ca) if tls.amqp_ca else None)
        if tls.amqp_cert is not None and tls.amqp_key is not None:
            context.load_cert_chain(str(tls.amqp_cert), str(tls.amqp_key))
    except (OSError, ssl.SSLError) as exc:
        raise BusError(f"cannot load the broker TLS files (CLEARCARD_AMQP_CA/_CERT/_KEY): {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def parameters(url: str, tls: TlsFiles | None = None) -> pika.ConnectionParameters:
    """pika's connection parameters for `url`; `amqps://` gets a verifying TLS context."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise BusError(f"bad AMQP URL: {exc}") from None
    if urlsplit(url).scheme.lower() == "amqps":
        # pika's own default context for amqps:// cannot check the host name (it has none to check)
        params.ssl_options = pika.SSLOptions(client_context(tls or TlsFiles()), server_hostname=params.host)
    elif tls is not None and (tls.amqp_ca or tls.amqp_cert):
        raise BusError("CLEARCARD_AMQP_CA/_CERT are set but CLEARCARD_AMQP_URL is not amqps://")
    return params


def explain(reason: BaseException | None) -> str | None:
    """Plain words for a TLS failure somewhere inside a pika connection error, if it is one."""
    seen: set[int] = set()
    pending: list[BaseException] = [reason] if reason is not None else []
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"the broker's TLS certificate is not trusted ({exc.verify_message}); "
                    "check CLEARCARD_AMQP_CA and the host name in CLEARCARD_AMQP_URL")
        if isinstance(exc, ssl.SSLError):
            return f"TLS with the broker failed ({exc.reason or exc}); is it listening for TLS on that port?"
        # pika wraps the socket's error: AMQPConnectionWorkflowFailed.exceptions -> .exception
        pending.extend(e for e in (exc.__cause__, exc.__context__, getattr(exc, "exception", None))
                       if isinstance(e, BaseException))
        pending.extend(e for e in getattr(exc, "exceptions", ()) or () if isinstance(e, BaseException))
        pending.extend(e for e in getattr(exc, "args", ()) if isinstance(e, BaseException))
    return None
