"""Certificates for the local compose stack: a development CA and the certificates it signs.

    python infra/tls/make_dev_certs.py        # writes infra/tls/dev/ (kept out of git)

Makes `ca.pem`, server certificates for `rabbitmq`, `postgres` and `console` (with `localhost`),
and a client certificate for the services. For a local stack only: the keys are readable by
every container user. In production the enterprise's own CA issues these (docs/scaling.md).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = Path(__file__).with_name("dev")
SERVERS = {"rabbitmq": ["rabbitmq", "localhost"], "postgres": ["postgres", "localhost"],
           "console": ["console", "localhost"]}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    (OUT / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (OUT / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (OUT / f"{stem}.key").chmod(0o644)  # development only: any container user reads it


def main() -> int:
    OUT.mkdir(exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("ClearCard development CA"))
          .issuer_name(_name("ClearCard development CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=825))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (OUT / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = {**{name: (hosts, ExtendedKeyUsageOID.SERVER_AUTH) for name, hosts in SERVERS.items()},
              "client": ([], ExtendedKeyUsageOID.CLIENT_AUTH)}
    for stem, (hosts, usage) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(f"clearcard-{stem}")).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
                                            critical=False)
        _write(stem, key, builder.sign(ca_key, hashes.SHA256()))
    print(f"development certificates in {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
