"""The deployment material in infra/ is well-formed and consistent with the code.

No docker engine or cluster runs here: the compose file is checked against the Compose
specification's JSON schema (tests/infra/compose_spec.json, vendored from the docker-compose
1.29.2 distribution, Apache-2.0) plus structural checks; the Kubernetes manifests against the
Kubernetes OpenAPI schemas shipped in the `kubernetes-validate` package (strict mode) plus
cross-references; systemd units are parsed as INI.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import trio
import yaml

from shared.bus import topology

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SERVICES = ["auth", "coordinator", "backup", "audit", "gateway", "authority-sim", "console"]
K8S_VERSION = "1.30.0"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rabbitmq_generate", INFRA / "rabbitmq" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- RabbitMQ definitions -------------------------------------------------------------------


def test_the_committed_definitions_are_what_the_generator_writes() -> None:
    committed = (INFRA / "rabbitmq" / "definitions.json").read_text(encoding="utf-8")
    assert committed == _generator().render(), "run: python infra/rabbitmq/generate.py"


def test_every_topology_queue_is_defined_with_its_dead_letter_companion() -> None:
    doc = json.loads((INFRA / "rabbitmq" / "definitions.json").read_text(encoding="utf-8"))
    exchanges = {e["name"]: e for e in doc["exchanges"]}
    assert {topology.COMMANDS, topology.EVENTS, topology.DEAD_LETTERS} <= set(exchanges)
    assert all(e["durable"] and e["type"] == "topic" for e in exchanges.values())
    queues = {q["name"]: q for q in doc["queues"]}
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in doc["bindings"]}
    for spec in [*topology.ALL_SERVICES.queues, topology.gateway_queue("default")]:
        args = queues[spec.name]["arguments"]
        assert args["x-queue-type"] == "quorum" and args["x-dead-letter-exchange"] == topology.DEAD_LETTERS
        assert args["x-delivery-limit"] == spec.delivery_limit
        assert queues[spec.dead_letter_queue]["arguments"] == {"x-queue-type": "quorum"}
        assert (topology.DEAD_LETTERS, spec.dead_letter_queue, spec.name) in bindings
        for exchange, pattern in spec.bindings:
            assert (exchange, spec.name, pattern) in bindings
    for binding in doc["bindings"]:
        assert binding["source"] in exchanges and binding["destination"] in queues
    policies = {p["name"]: p for p in doc["policies"]}
    dead = re.compile(policies["clearcard-dead-letters"]["pattern"])
    work = re.compile(policies["clearcard-work-queues"]["pattern"])
    for name in queues:
        assert bool(dead.search(name)) == name.endswith(".dead")
        assert bool(work.search(name)) != name.endswith(".dead")


def test_every_service_has_its_own_broker_account_without_a_password() -> None:
    doc = json.loads((INFRA / "rabbitmq" / "definitions.json").read_text(encoding="utf-8"))
    users = {u["name"]: u for u in doc["users"]}
    assert set(users) == {"clearcard-auth", "clearcard-coordinator", "clearcard-backup", "clearcard-audit",
                          "clearcard-authority-sim", "clearcard-notify", "clearcard-console", "clearcard-cli",
                          "clearcard-gateway-default"}
    assert all(u["password_hash"] == "" and u["tags"] == [] for u in users.values())  # set on deployment
    perms = {p["user"]: p for p in doc["permissions"]}
    assert set(perms) == set(users) and all(p["vhost"] == "/" for p in perms.values())
    topic = {(t["user"], t["exchange"]): t["write"] for t in doc["topic_permissions"]}
    for user in users:  # an exchange without a topic permission would allow every routing key
        assert (user, topology.COMMANDS) in topic and (user, topology.EVENTS) in topic
    assert re.fullmatch(topic[("clearcard-coordinator", topology.COMMANDS)], "gateway.default.writeback")
    assert not re.fullmatch(topic[("clearcard-gateway-default", topology.COMMANDS)] or "^$",
                            "gateway.default.writeback")
    assert topic[("clearcard-console", topology.EVENTS)] == ""
    assert not re.fullmatch(perms["clearcard-gateway-default"]["read"], "clearcard.gateway.other")
    assert re.fullmatch(perms["clearcard-gateway-default"]["read"], "clearcard.gateway.default.shard.3")


@pytest.mark.rabbitmq
async def test_rabbitmq_loads_the_definitions_and_the_services_declare_over_them() -> None:
    from shared.bus.rabbitmq import RabbitBus
    from tests.support.vhosts import fresh_vhost

    async with fresh_vhost() as url:
        vhost = url.rsplit("/", 1)[1]
        # a world-readable file: rabbitmqctl cannot read the test's private tmp_path (and 3.10
        # does not take "-" for stdin)
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as defs:
            # users are global objects: the shared broker gets none (test_broker_accounts makes its own)
            defs.write(_generator().render(vhost=vhost, with_accounts=False))
            defs.flush()
            os.chmod(defs.name, 0o644)
            await trio.run_process(["rabbitmqctl", "-q", "import_definitions", defs.name],
                                   capture_stdout=True, capture_stderr=True)
        # the same names and arguments as the services declare: no PRECONDITION_FAILED
        with trio.fail_after(30):
            async with RabbitBus.connect(url) as bus:
                await bus.declare(topology.ALL_SERVICES + topology.topology_for(topology.gateway_queue("default")))
        listed = await trio.run_process(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "policy"],
                                        capture_stdout=True)
        rows = dict(line.split("\t") for line in listed.stdout.decode().splitlines()[1:] if "\t" in line)
        assert rows["clearcard.backup"] == "clearcard-work-queues"
        assert rows["clearcard.backup.dead"] == "clearcard-dead-letters"


# --- compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def test_the_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((Path(__file__).with_name("compose_spec.json")).read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []
    broken = _compose()
    broken["services"]["console"]["prots"] = ["8080:8080"]
    assert list(validator.iter_errors(broken)), "the schema must reject unknown keys"


def test_the_compose_stack_is_complete_and_consistent() -> None:
    doc = _compose()
    services: dict[str, Any] = doc["services"]
    declared_volumes = set(doc.get("volumes") or {})
    for name in ["rabbitmq", "rabbitmq-accounts", "postgres", "otel-collector", "jaeger", "prometheus", "grafana",
                 "migrate", *SERVICES]:
        assert name in services, name
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        build = service.get("build")
        if build:
            context = (INFRA / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        depends = service.get("depends_on") or []
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in services and other != name, f"{name} depends on {other}"
        for env_file in service.get("env_file") or []:
            assert (INFRA / env_file).is_file(), env_file
        for port in service.get("ports") or []:
            assert re.fullmatch(r"\d+:\d+", str(port)), f"{name}: {port}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["serve", name]
        assert service["image"] == "clearcard:latest" and "./clearcard.env" in service["env_file"]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["db", "migrate"]
    assert "8080:8080" in services["console"]["ports"]
    env = dict(line.split("=", 1) for line in (INFRA / "clearcard.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert "CLEARCARD_AMQP_URL" not in env  # one broker account per service
    for name in SERVICES:
        url = services[name]["environment"]["CLEARCARD_AMQP_URL"]
        account = "gateway-default" if name == "gateway" else name
        assert url.startswith(f"amqps://clearcard-{account}:") and "@rabbitmq:5671/" in url, url
        assert '"clearcard-$$account"' in services["rabbitmq-accounts"]["command"][0] and account in \
            services["rabbitmq-accounts"]["command"][0]
    assert "@postgres:5432/" in env["CLEARCARD_DATABASE_URL"] and "sslmode=verify-full" in env["CLEARCARD_DATABASE_URL"]
    assert env["CLEARCARD_AMQP_CA"].startswith("/etc/clearcard/tls/")
    assert services["console"]["environment"]["CLEARCARD_HTTP_CERT"].startswith("/etc/clearcard/tls/")
    conf = (INFRA / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "listeners.tcp = none" in conf and "listeners.ssl.default = 5671" in conf
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    plugins = (INFRA / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins and "rabbitmq_consistent_hash_exchange" in plugins


def test_the_dockerfile_builds_one_image_running_clearcard() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    for folder in ("clearcard", "shared", "services", "device_gateway"):
        assert f"COPY {folder} ./{folder}" in text and (ROOT / folder).is_dir()
    assert 'ENTRYPOINT ["clearcard"]' in text and "USER clearcard" in text


def test_observability_configuration() -> None:
    collector = yaml.safe_load((INFRA / "otel-collector.yaml").read_text(encoding="utf-8"))
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], component
    assert "jaeger:4317" in collector["exporters"]["otlp/jaeger"]["endpoint"]
    prometheus = yaml.safe_load((INFRA / "prometheus.yml").read_text(encoding="utf-8"))
    [console] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "clearcard-console"]
    assert console["metrics_path"] == "/metrics" and console["static_configs"][0]["targets"] == ["console:8080"]
    provisioning = INFRA / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    assert {s["uid"] for s in sources["datasources"]} == {"prometheus", "jaeger"}
    dashboards = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_dashboard_is_well_formed() -> None:
    """Its shape; that every panel's query finds data is tests/console/test_dashboard.py (real Prometheus)."""
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "clearcard.json").read_text(encoding="utf-8"))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("outcome", "error code", "step duration", "queue depths", "risk", "gateway command latency",
                  "filing and comparison"):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids) and dashboard["uid"]
    assert all(p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in dashboard["panels"])


# --- Kubernetes -------------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    manifests = _manifests()
    assert manifests
    for name, doc in manifests:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name} {doc.get('kind')}/{doc['metadata'].get('name')}: {exc.message}") from None
    broken = next(doc for _, doc in manifests if doc["kind"] == "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_manifests_reference_each_other_consistently() -> None:
    manifests = _manifests()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for _, doc in manifests:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        assert doc["metadata"].get("namespace", "clearcard") == "clearcard"
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (INFRA / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    workloads = {**by_kind["Deployment"], **by_kind["DaemonSet"]}
    for service in SERVICES:
        workload = workloads[f"clearcard-{service}"]
        [container] = workload["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["serve", service]
    assert by_kind["DaemonSet"]["clearcard-gateway"]["spec"]["template"]["spec"]["nodeSelector"]
    pods = [*workloads.values(), *by_kind["Job"].values()]
    for workload in pods:
        template = workload["spec"]["template"]
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= template["metadata"]["labels"].items(), workload["metadata"]["name"]
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for container in template["spec"]["containers"]:
            assert container["image"].startswith("registry.example/clearcard:")
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in by_kind["ConfigMap"]
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in by_kind["Secret"]
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, mount
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind["ConfigMap"]
    console = by_kind["Service"]["clearcard-console"]
    console_labels = workloads["clearcard-console"]["spec"]["template"]["metadata"]["labels"]
    assert console["spec"]["selector"].items() <= console_labels.items()
    [port] = console["spec"]["ports"]
    [container] = workloads["clearcard-console"]["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    config = by_kind["ConfigMap"]["clearcard-config"]["data"]
    secrets = by_kind["Secret"]["clearcard-secrets"]["stringData"]
    assert {"CLEARCARD_DATABASE_URL"} <= set(secrets) and "sslmode=verify-full" in secrets["CLEARCARD_DATABASE_URL"]
    assert "CLEARCARD_BACKUP_DIRS" in config and not {"CLEARCARD_AMQP_URL", "CLEARCARD_DATABASE_URL"} & set(config)
    broker = by_kind["Secret"]["clearcard-broker"]["stringData"]
    for service in SERVICES:  # its own broker account, its own identity key, the CA
        spec = workloads[f"clearcard-{service}"]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        [url] = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "CLEARCARD_AMQP_URL"]
        key = "gateways" if service == "gateway" else service
        assert url == {"name": "clearcard-broker", "key": key} and broker[key].startswith("amqps://")
        [identity] = [v for v in spec["volumes"] if v["name"] == "identity"]
        sources = identity["projected"]["sources"]
        assert sources[0]["configMap"]["name"] in by_kind["ConfigMap"]
        assert sources[1]["secret"]["name"] == f"clearcard-identity-{service}" in by_kind["Secret"]
        assert {"tls", "identity"} <= {m["name"] for m in container["volumeMounts"]}
    audit_mounts = {m["mountPath"] for m in workloads["clearcard-audit"]["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]}
    assert {"/backups/a", "/backups/b"} <= audit_mounts  # the audit anchors live in the backup locations


# --- systemd ----------------------------------------------------------------------------------


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def test_one_systemd_unit_per_service_running_clearcard_serve() -> None:
    units = sorted((INFRA / "systemd").glob("clearcard-*.service"))
    assert sorted(p.name for p in units) == sorted(f"clearcard-{s}.service" for s in SERVICES)
    for path in units:
        service = path.name.removeprefix("clearcard-").removesuffix(".service")
        unit = _unit(path)
        assert set(unit.sections()) >= {"Unit", "Service", "Install"}, path.name
        assert unit["Unit"]["Description"]
        exec_start = unit["Service"]["ExecStart"].split()
        assert exec_start[0].startswith("/") and Path(exec_start[0]).name == "clearcard", path.name
        assert exec_start[1:] == ["serve", service], path.name
        text = path.read_text(encoding="utf-8")
        assert "EnvironmentFile=/etc/clearcard/clearcard.env\n" in text
        assert f"EnvironmentFile=-/etc/clearcard/clearcard-{service}.env\n" in text  # its own broker account
        assert unit["Service"]["Restart"] == "on-failure" and unit["Install"]["WantedBy"]
    example = (INFRA / "systemd" / "clearcard.env.example").read_text()
    for variable in ("CLEARCARD_AMQP_URL", "CLEARCARD_DATABASE_URL", "CLEARCARD_BACKUP_DIRS"):
        assert f"{variable}=" in example
