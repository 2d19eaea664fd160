"""Encrypted, verified links: gateway and coordinator processes reach RabbitMQ over TLS and
clear a device; a broker certificate from another CA is refused in plain words.

The shared broker speaks plain AMQP and is not reconfigured: a TLS-terminating proxy on
loopback (tests/support/tls.py) presents a certificate of a test CA, asks for client
certificates, and forwards to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.postgres_tls import tls_cluster
from tests.support.processes import cli, environment, serving
from tests.support.tls import TestCA, TlsProxy, server_context
from tests.support.vhosts import fresh_vhost

pytestmark = pytest.mark.rabbitmq


def through(url: str, port: int) -> str:
    """`url` pointed at the proxy, as amqps:// with the host name the certificate names."""
    parts = urlsplit(url)
    return urlunsplit(("amqps", f"{parts.username}:{parts.password}@localhost:{port}", parts.path, "", ""))


async def test_gateway_and_coordinator_clear_a_device_over_tls(tmp_path: Path, database_url: str) -> None:
    ca = TestCA(tmp_path / "ca")
    client = ca.issue("clearcard-gateway", server=False)
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with fresh_vhost() as plain:
        host, port = urlsplit(plain).hostname or "127.0.0.1", urlsplit(plain).port or 5672
        proxy = TlsProxy(host, port, server_context(ca.issue("broker"), client_ca=ca.ca))
        async with proxy.running():
            env = environment(tmp_path / "data", through(plain, proxy.port), database_url, fleet)
            env.update(CLEARCARD_AMQP_CA=str(ca.ca), CLEARCARD_AMQP_CERT=str(client.cert),
                       CLEARCARD_AMQP_KEY=str(client.key))
            async with serving(env, "gateway", log=tmp_path / "gateway.log"), \
                    serving(env, "coordinator", "auth", "backup", "audit", "authority-sim",
                            log=tmp_path / "services.log"):
                done = await cli(env, "clear", "--branch", BRANCH, "--period", "2026-10",
                                 "--device", "661500000001", "--json", check=False)
                shown = json.loads((await cli(env, "emulator", "show", "661500000001", "--json")).stdout)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert len(shown["writebacks"]) == len(shown["status"]) > 0
        # gateway, services and the clear command each opened TLS sessions with a client certificate
        assert proxy.handshakes >= 3 and proxy.failed_handshakes == 0
        assert len(proxy.client_certificates) == proxy.handshakes
        assert all("clearcard-gateway" in subject for subject in proxy.client_certificates)


async def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, database_url: str) -> None:
    ca, other = TestCA(tmp_path / "ca"), TestCA(tmp_path / "other", "Someone else's CA")
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with fresh_vhost() as plain:
        parts = urlsplit(plain)
        proxy = TlsProxy(parts.hostname or "127.0.0.1", parts.port or 5672, server_context(other.issue("impostor")))
        async with proxy.running():
            env = environment(tmp_path / "data", through(plain, proxy.port), database_url, fleet)
            env.update(CLEARCARD_AMQP_CA=str(ca.ca))
            with trio.fail_after(60):
                refused = await cli(env, "serve", "gateway", check=False)
    assert refused.returncode != 0
    text = refused.stderr.decode()
    assert "the broker's TLS certificate is not trusted" in text and "CLEARCARD_AMQP_CA" in text, text[-2000:]
    assert proxy.handshakes == 0


@pytest.mark.postgres
async def test_the_services_use_postgresql_over_verified_tls(tmp_path: Path) -> None:
    """`sslmode=verify-full`: a private cluster with ssl on (only TLS connections allowed) serves
    the migration, the services and a clear; a server certificate from another CA is refused."""
    ca, other = TestCA(tmp_path / "ca"), TestCA(tmp_path / "other", "Someone else's CA")
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with tls_cluster(ca.issue("database")) as port, fresh_vhost() as amqp:
        def dsn(root: Path) -> str:
            return f"postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={root}"

        wrong = environment(tmp_path / "wrong", amqp, dsn(other.ca), fleet)
        refused = await cli(wrong, "db", "migrate", check=False)
        env = environment(tmp_path / "data", amqp, dsn(ca.ca), fleet)
        await cli(env, "db", "migrate")
        async with serving(env, "all", log=tmp_path / "serve.log"):
            done = await cli(env, "clear", "--branch", BRANCH, "--period", "2026-10", "--json", check=False)
        # whoever connected, did so over TLS (the cluster refuses anything else)
        plain = environment(tmp_path / "plain", amqp, dsn(ca.ca).replace("verify-full", "disable"), fleet)
        unencrypted = await cli(plain, "db", "migrate", check=False)
    assert refused.returncode == 1
    assert "TLS certificate is not trusted" in refused.stderr.decode(), refused.stderr.decode()[-2000:]
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert unencrypted.returncode == 1 and "no encryption" in unencrypted.stderr.decode()
