"""A test certificate authority and a TLS-terminating proxy, for the encrypted-link tests.

The shared RabbitMQ and PostgreSQL servers are plain TCP and must not be reconfigured, so a
test puts `TlsProxy` in front of them on loopback: it speaks TLS to the client with a server
certificate from `TestCA` and forwards the decrypted bytes to the real server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class TestCA:
    """A certificate authority in a folder: `ca.pem`, and certificates it issues."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "ClearCard test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = folder / f"{name.replace(' ', '-')}.pem"
        self.ca.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool = True, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
              ) -> Issued:
        """A certificate for a server (names `hosts`) or a client (named `common_name`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = self.folder / common_name
        cert_path = stem.with_suffix(".crt")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(cert_path, _write_key(key, stem.with_suffix(".key")))


def server_context(issued: Issued, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context presenting `issued`; with `client_ca`, clients must show a certificate of it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(issued.cert), str(issued.key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    return context


class TlsProxy:
    """TLS on 127.0.0.1:<port>, forwarded in clear to (host, port); counts what it saw."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.target = (host, port)
        self.context = context
        self.port = 0
        self.handshakes = 0  # TLS sessions established
        self.failed_handshakes = 0
        self.client_certificates: list[str] = []  # subjects of verified client certificates

    async def _pump(self, source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.aclose()

    async def _serve(self, client: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await client.do_handshake()
        except trio.BrokenResourceError:
            self.failed_handshakes += 1
            return
        self.handshakes += 1
        peer = client.getpeercert()
        if peer:
            self.client_certificates.append(str(peer.get("subject")))
        async with await trio.open_tcp_stream(*self.target) as upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream)
            nursery.start_soon(self._pump, upstream, client)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TlsProxy]:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_ssl_over_tcp, self._serve, 0, self.context,
                                                              host="127.0.0.1", https_compatible=True))
            self.port = listeners[0].transport_listener.socket.getsockname()[1]
            yield self
            nursery.cancel_scope.cancel()
