"""The Helm chart (helm/fpgaas), linted and rendered by Helm v4's own SDK (helm-python-sdk, the
Go library through its C ABI, no helm binary) for the value sets a deployment uses, every
manifest validated against the Kubernetes schemas (kubernetes-validate, strict: unknown fields
are errors), and the invariants every rendering must keep asserted."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from fpgaas.kernels.signing import generate_keypair
from tests.fixtures.prometheus import promtool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "fpgaas"
KUBE_VERSION = "1.30.0"
SUPERSONIC_QUERY = (
    "sum(rate(nv_inference_queue_duration_us[30s])) / (sum(rate(nv_inference_exec_count[30s])) * 1000)"
)
ADMIN_TOKEN = "admin-token-3f9a0c7e51d24b68"
INFERENCE_TOKEN = "inference-token-8c1d2e3f"
DB_URL = "postgresql://fpgaas:db-password-77aa@db.example.org:5432/fpgaas"
PG_PASSWORD = "bundled-password-5b6c"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    private, public = generate_keypair(tmp_path_factory.mktemp("chart-keys"))
    return {"privateKey": private.read_text(), "publicKey": public.read_text()}


def value_sets(keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The deployments the chart is tested for."""
    u250 = yaml.safe_load((CHART / "values-u250.yaml").read_text())
    return {
        # trying it out: the CPU twin, one worker, an external database
        "emulated": {"signing": keys, "database": {"url": DB_URL}},
        # INFN Cloud, one Alveo U250 node (the committed values file)
        "u250": u250,
        # a build farm: four workers with two builds each, the bundled PostgreSQL, KEDA, the
        # Prometheus Operator's ServiceMonitor and PrometheusRule
        "workers": {
            "signing": keys,
            "worker": {"replicas": 4, "concurrency": 2},
            "postgresql": {"enabled": True, "auth": {"password": PG_PASSWORD}},
            "autoscaling": {"keda": {"enabled": True, "maxReplicas": 6}},
            "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        },
        # an external database from an existing Secret, management and inference tokens inline
        "external-db": {
            "signing": keys,
            "database": {"existingSecret": "cms-fpgaas-db", "existingSecretKey": "libpq-url"},
            "management": {"enabled": True, "adminToken": {"value": ADMIN_TOKEN}},
            "inferenceToken": {"value": INFERENCE_TOKEN},
            "server": {"device": "pynq", "pynqEmulatedCards": 2},
        },
    }


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest `helm template` would print for `values`, parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="infn", namespace="cms", is_install=True)
    docs = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
    assert docs, "the chart rendered nothing"
    return docs


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every workload's pod template."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            pod = doc["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield pod, container


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    [doc] = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"].endswith(suffix)]
    return doc


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@pytest.fixture(scope="module")
def rendered(keys: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in value_sets(keys).items()}


SETS = ["emulated", "u250", "workers", "external-db"]


@pytest.mark.parametrize("name", SETS)
def test_helm_lint_finds_no_error(name: str, keys: dict[str, str]) -> None:
    result = helm.lint(str(CHART), value_sets(keys)[name], strict=True, kube_version=KUBE_VERSION)
    assert result["errors"] == [], result["messages"]


@pytest.mark.parametrize("name", SETS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for doc in rendered[name]:
        if doc["kind"] in CRD_KINDS:
            continue  # no Kubernetes schema: checked by test_custom_resources_are_well_formed
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_schema_validation_catches_a_wrong_manifest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validator is not a rubber stamp: a misspelt field is refused."""
    deployment = json.loads(json.dumps(named(rendered["emulated"], "Deployment", "-server")))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", SETS)
def test_every_container_is_non_root_read_only_with_resources_and_probes(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    seen = 0
    for pod, container in containers(rendered[name]):
        seen += 1
        who = f"{name}: container {container['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, who
        assert pod["automountServiceAccountToken"] is False, who
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, who
        assert security["readOnlyRootFilesystem"] is True, who
        assert security["allowPrivilegeEscalation"] is False, who
        assert security["capabilities"]["drop"] == ["ALL"], who
        assert "add" not in security["capabilities"], who
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{who}: {bound}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{who}: no {probe}"
        # a read-only root needs somewhere to write: /tmp is a volume in every container
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, who
    assert seen >= 2, f"{name}: expected the server and the worker, found {seen} containers"


@pytest.mark.parametrize("name", SETS)
def test_no_secret_value_is_in_plain_environment(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    secrets = {ADMIN_TOKEN, INFERENCE_TOKEN, DB_URL, PG_PASSWORD, "db-password-77aa"}
    for secret in by_kind(docs, "Secret"):
        secrets |= {base64.b64decode(v).decode() for v in secret.get("data", {}).values() if v}
    secrets.discard("")
    for _pod, container in containers(docs):
        for var, entry in env_of(container).items():
            value = entry.get("value", "")
            assert not any(s in value for s in secrets), f"{name}: {var} holds a secret"
            if any(word in var for word in ("TOKEN", "PASSWORD")):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}: {var} is not from a Secret"
            if var == "FPGAAS_DATABASE_URL" and "value" in entry:
                assert "@" in value and ":" not in value.split("@")[0].removeprefix("postgresql://"), (
                    f"{name}: a database URL in plain env must carry no password"
                )


def test_management_is_never_rendered_without_a_token(keys: dict[str, str]) -> None:
    values = {"signing": keys, "database": {"url": DB_URL}, "management": {"enabled": True}}
    with pytest.raises(helm.HelmError, match=r"management\.enabled needs a token"):
        render(values)


def test_management_with_a_token_reads_it_from_a_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-db"]
    server = named(docs, "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(server)
    assert env["FPGAAS_MANAGEMENT"]["value"] == "true"
    ref = env["FPGAAS_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = named(docs, "Secret", "-admin-token")
    assert secret["metadata"]["name"] == ref["name"]
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == ADMIN_TOKEN
    assert env["FPGAAS_INFERENCE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"].endswith("-inference-token")
    # the external database comes from the named Secret and key
    assert env["FPGAAS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "cms-fpgaas-db",
        "key": "libpq-url",
    }


def test_management_off_mounts_the_artifacts_read_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    server = named(rendered["emulated"], "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(server)["FPGAAS_MANAGEMENT"]["value"] == "false"
    assert "FPGAAS_ADMIN_TOKEN" not in env_of(server)
    [artifacts] = [m for m in server["volumeMounts"] if m["name"] == "artifacts"]
    assert artifacts["readOnly"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signing": {"privateKey": "", "publicKey": ""}}, "artifacts are signed"),
        ({"database": {"url": ""}}, "build queue's PostgreSQL"),
        (
            {"postgresql": {"enabled": True}},
            "needs postgresql.auth.existingSecret or postgresql.auth.password",
        ),
        ({"postgresql": {"enabled": True, "auth": {"password": PG_PASSWORD}}}, "choose one database"),
        ({"server": {"device": "pynq"}}, "needs server.fpga.resource"),
    ],
)
def test_incomplete_configurations_are_refused_with_the_reason(
    change: dict[str, Any], message: str, keys: dict[str, str]
) -> None:
    values = value_sets(keys)["emulated"]
    for key, part in change.items():
        values[key] = {**values.get(key, {}), **part}
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    "bad",
    [
        {"server": {"fpga": {"resource": "nvidia.com/gpu", "count": 1, "xrtHostPath": "/opt/xilinx"}}},
        {"server": {"device": "cuda"}},
        {"worker": {"extraEnv": [{"name": "FPGAAS_ADMIN_TOKEN", "value": "x"}]}},
        {"serverr": {}},
        {"server": {"preStopSleepSeconds": -1}},
    ],
)
def test_values_schema_refuses_bad_values(bad: dict[str, Any], keys: dict[str, str]) -> None:
    values = value_sets(keys)["emulated"]
    for key, part in bad.items():
        values[key] = {**values.get(key, {}), **part}
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(values)


def test_u250_node_requests_the_card_and_mounts_xrt(rendered: dict[str, list[dict[str, Any]]]) -> None:
    u250 = yaml.safe_load((CHART / "values-u250.yaml").read_text())
    resource = u250["server"]["fpga"]["resource"]
    assert resource.startswith(("amd.com/", "xilinx.com/fpga-"))
    deployment = named(rendered["u250"], "Deployment", "-server")
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["resources"]["limits"][resource] == 1
    assert pod["nodeSelector"] == u250["server"]["nodeSelector"]
    assert pod["tolerations"] == u250["server"]["tolerations"]
    [xrt] = [v for v in pod["volumes"] if v["name"] == "xrt"]
    assert xrt["hostPath"]["path"] == "/opt/xilinx"
    assert {"name": "xrt", "mountPath": "/opt/xilinx", "readOnly": True} in server["volumeMounts"]
    assert env_of(server)["XILINX_XRT"]["value"] == "/opt/xilinx/xrt"
    assert env_of(server)["FPGAAS_DEVICE"]["value"] == "pynq"
    # one card, one pod: the old pod releases it before the new one starts
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert named(rendered["u250"], "Deployment", "-worker")["spec"]["replicas"] == 2


def test_emulated_requests_no_card(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = named(rendered["emulated"], "Deployment", "-server")["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert set(limits) == {"cpu", "memory"}
    assert "xrt" not in {v["name"] for v in pod["volumes"]}


def test_server_ports_probes_and_scrape_annotations(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["emulated"]
    deployment = named(docs, "Deployment", "-server")
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8000, "grpc": 8001}
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8000"
    service = named(docs, "Service", "-server")
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc"}
    assert named(docs, "PodDisruptionBudget", "-server")["spec"]["maxUnavailable"] == 1
    policy = named(docs, "NetworkPolicy", "-server")
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {"http", "grpc"}
    # the server gets the public key only, the worker the private key only
    [signing] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "signing"]
    assert signing["secret"]["items"] == [{"key": "signing.pub", "path": "signing.pub"}]


def test_a_stopping_server_pod_keeps_serving_while_its_endpoints_go(
    rendered: dict[str, list[dict[str, Any]]], keys: dict[str, str]
) -> None:
    # The preStop sleep delays the SIGTERM, and the grace period grows by it so that the server
    # still gets its own 30 s to drain afterwards.
    pod = named(rendered["emulated"], "Deployment", "-server")["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] == 35
    values = value_sets(keys)["emulated"]
    values["server"] = {**values.get("server", {}), "preStopSleepSeconds": 0}
    pod = named(render(values), "Deployment", "-server")["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 30


def test_workers_share_the_artifact_volume_and_the_bundled_database(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["workers"]
    worker = named(docs, "Deployment", "-worker")
    assert worker["spec"]["replicas"] == 4
    container = worker["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert container["args"] == ["worker"]
    assert env["FPGAAS_WORKER_CONCURRENCY"]["value"] == "2"
    assert env["FPGAAS_DATABASE_URL"]["value"] == "postgresql://fpgaas@infn-fpgaas-postgresql:5432/fpgaas"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "infn-fpgaas-postgresql"
    [signing] = [v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "signing"]
    assert signing["secret"]["items"] == [{"key": "signing.key", "path": "signing.key"}]
    [pvc] = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for deployment in by_kind(docs, "Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        [artifacts] = [v for v in volumes if v["name"] == "artifacts"]
        assert artifacts["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert named(docs, "StatefulSet", "-postgresql")["spec"]["volumeClaimTemplates"]
    assert named(docs, "NetworkPolicy", "-postgresql")


def test_keda_scales_the_servers_on_supersonic_queue_time(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["workers"]
    [scaled] = by_kind(docs, "ScaledObject")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"] == named(docs, "Deployment", "-server")["metadata"]["name"]
    )
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == SUPERSONIC_QUERY
    assert scaled["spec"]["maxReplicaCount"] == 6
    # KEDA owns the replica count
    assert "replicas" not in named(docs, "Deployment", "-server")["spec"]


def test_custom_resources_are_well_formed(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """ServiceMonitor, PrometheusRule and ScaledObject have no Kubernetes schema: their required
    fields are checked here, and the PrometheusRule's groups by promtool itself."""
    docs = rendered["workers"]
    [monitor] = by_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = named(docs, "Service", "-server")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    [rule] = by_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    checked = promtool("check", "rules", rules_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    source = yaml.safe_load((REPO / "docker" / "prometheus" / "fpgaas-rules.yml").read_text())
    assert rule["spec"] == source
    [scaled] = by_kind(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert {"scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount"} <= set(scaled["spec"])


def test_dashboards_config_map_is_labelled_for_grafanas_sidecar(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    [config_map] = [
        d for d in by_kind(rendered["emulated"], "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = (REPO / "docker" / "grafana" / "dashboards" / "fpgaas.json").read_text()
    assert json.loads(config_map["data"]["fpgaas.json"]) == json.loads(committed)
