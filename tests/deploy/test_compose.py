"""docker/compose.yaml, the single-host deployment: valid against the Compose Specification's
JSON schema (committed: tests/deploy/data/compose-spec.json, from compose-spec/compose-spec,
schema/compose-spec.json at commit a08f8d5 of 2025-10-28; no network at test time), and
hardened the way the chart is."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fpgaas.cli import parser
from tests.fixtures.prometheus import promtool

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
FPGAAS = ("server", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(compose)


def test_the_schema_check_rejects_a_malformed_file(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["server"]["cap_drop"] = "ALL"  # a list, not a string
    broken["services"]["worker"]["restart_policy"] = "always"
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))
    assert len(errors) == 2


def test_it_runs_server_worker_database_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"server", "worker", "postgres", "prometheus", "grafana"}
    assert compose["services"]["server"]["command"] == ["serve"]
    assert compose["services"]["worker"]["command"] == ["worker"]
    for command in ("serve", "worker"):  # the images' entry point knows both
        with pytest.raises(SystemExit) as done:
            parser().parse_args([command, "--help"])
        assert done.value.code == 0, command
    for name in FPGAAS:
        assert compose["services"][name]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", FPGAAS)
def test_fpgaas_containers_are_non_root_read_only_and_unprivileged(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["user"] == "10001:10001"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert any(t.startswith("/tmp") for t in service["tmpfs"])
    assert "privileged" not in service


def test_every_service_is_hardened_and_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("read_only") is True and service.get("cap_drop") == ["ALL"], name
        user = service["user"].split(":")[0]
        assert user.isdigit() and int(user) != 0, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_the_card_and_xrt_reach_the_server(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    devices = [d.split(":")[0] for d in server["devices"]]
    assert any(re.fullmatch(r"/dev/xclmgmt\d+", d) for d in devices)
    assert any(re.fullmatch(r"/dev/dri/renderD\d+", d) for d in devices)
    assert "/opt/xilinx:/opt/xilinx:ro" in server["volumes"]
    assert server["environment"]["XILINX_XRT"] == "/opt/xilinx/xrt"


def test_no_secret_is_in_the_environment(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for var, value in service.get("environment", {}).items():
            if re.search(r"TOKEN|PASSWORD$|SECRET", var):
                pytest.fail(f"{name}: {var} is set in the environment, not read from a secret file")
            if var == "FPGAAS_DATABASE_URL":
                assert ":" not in value.removeprefix("postgresql://").split("@")[0], (
                    f"{name}: password in URL"
                )
    declared = compose["secrets"]
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert declared[secret]["file"].startswith("./secrets/"), f"{name}: {secret}"
    assert compose["services"]["server"]["environment"]["FPGAAS_TRUSTED_KEYS"] == "/run/secrets/signing_pub"
    assert "signing_key" not in compose["services"]["server"]["secrets"], (
        "the server needs the public key only"
    )


def test_every_file_it_mounts_from_the_repository_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is missing"


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/fpgaas-rules.yml"]
    [fpgaas] = [job for job in config["scrape_configs"] if job["job_name"] == "fpgaas"]
    assert fpgaas["static_configs"] == [{"targets": ["server:8000"]}]
    # the container path of the rules, pointed at the repository's file for the check
    config["rule_files"] = [str(DOCKER / "prometheus" / "fpgaas-rules.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", local)
    assert checked.returncode == 0, checked.stdout + checked.stderr
