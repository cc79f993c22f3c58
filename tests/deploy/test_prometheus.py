"""Prometheus for real: the rules pass promtool (syntax and their unit tests), and a real
Prometheus server (Debian's package, on a loopback port, scraping every second) watching a live
fpgaas under traffic answers every dashboard panel's PromQL with data, SuperSONIC's KEDA
expression with a finite positive number, and the recording rules with series.

The server runs two emulated PYNQ cards with the model on both, and an admission budget so
small (10 µs) that concurrent requests are refused with 503: every panel, the 503 and rejection
ones included, has something to show. A few malformed and unknown-model requests feed the error
panels. Shadow verification checks every device call (FPGAAS_SHADOW_FRACTION=1.0) for the
shadow panels. The management API runs on the session's real PostgreSQL for the build panels:
four real uploads are queued, and while the traffic runs one succeeds, one fails and one starts
(moved on with the worker's own `BuildTable` calls: no hls4ml build, which would cost minutes of
CPU and show nothing more).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.dashboards import panel_queries
from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from fpgaas.kernels.builds.records import BuildState
from tests.fixtures.build_rows import advance
from tests.fixtures.builds import shared_small_build
from tests.fixtures.management import ADMIN_TOKEN, upload
from tests.fixtures.postgres import fresh_database, postgres_cluster
from tests.fixtures.prometheus import Prometheus, promtool, running_prometheus
from tests.fixtures.servers import serving

__all__ = ["postgres_cluster"]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docker" / "prometheus" / "fpgaas-rules.yml"
RULE_TESTS = REPO / "docker" / "prometheus" / "fpgaas-rules.test.yml"
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "fpgaas.json"
SUPERSONIC_QUERY = (
    "sum(rate(nv_inference_queue_duration_us[30s])) / (sum(rate(nv_inference_exec_count[30s])) * 1000)"
)
WINDOW = "15s"  # what Grafana's $__rate_interval becomes here (>= 4 scrape intervals)
TRAFFIC_S = 10.0
N_INPUTS = 27  # shared_small_build's model: 27 -> 8 -> 1


def test_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_rule_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests expecting another model's alert do."""
    shutil.copy(RULES, tmp_path / RULES.name)
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["tests"][1]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["model"] = "other"
    (tmp_path / "wrong.test.yml").write_text(yaml.safe_dump(tests))
    tested = promtool("test", "rules", tmp_path / "wrong.test.yml")
    assert tested.returncode != 0


def test_every_alert_the_deployment_needs_is_defined_and_unit_tested() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {
        "FpgaasCardUnhealthy",
        "FpgaasHigh503Rate",
        "FpgaasLatencyBudgetExceeded",
        "FpgaasNoReadyServer",
        "FpgaasBuildsFailing",
        "FpgaasCardShadowMismatch",
    } <= alerts
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts <= tested, f"alerts without a unit test: {alerts - tested}"


async def _traffic(url: str, seconds: float) -> Counter[int]:
    """Concurrent /predict and v2 infer calls of 1..256 rows, plus a few bad requests."""
    statuses: Counter[int] = Counter()
    row = [0.25] * N_INPUTS
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def caller(index: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                rows = (1, 8, 64, 256)[(index + n) % 4]
                if n % 3 == 0:
                    body = {
                        "inputs": [
                            {
                                "name": "inputs",
                                "shape": [rows, N_INPUTS],
                                "datatype": "FP32",
                                "data": row * rows,
                            }
                        ]
                    }
                    answer = await client.post("/v2/models/small/infer", json=body)
                elif n % 40 == 0:
                    answer = await client.post("/predict", json={"model": "small", "inputs": [[1.0, 2.0]]})
                elif n % 41 == 0:
                    answer = await client.post("/predict", json={"model": "missing", "inputs": [row]})
                else:
                    answer = await client.post("/predict", json={"model": "small", "inputs": [row] * rows})
                statuses[answer.status_code] += 1

        await asyncio.gather(*(caller(i) for i in range(16)))
    return statuses


def _finite(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(sample["value"][1]) for sample in result) if math.isfinite(v)]


def _builds_during_traffic(conninfo: str, ids: list[int]) -> None:
    """Queued builds move on while the traffic runs, so that the hour-window build panels see
    a change: one succeeds after ~2 s, one fails, one starts; the others stay queued."""
    time.sleep(1.0)
    advance(conninfo, ids[0], BuildState.RUNNING, BuildState.SUCCEEDED, hold_s=2.0)
    advance(conninfo, ids[1], BuildState.RUNNING, BuildState.FAILED, hold_s=0.5)
    advance(conninfo, ids[2], BuildState.RUNNING)


@pytest.fixture(scope="module")
def watched(
    tmp_path_factory: pytest.TempPathFactory, postgres_cluster: EmbeddedPostgres
) -> Iterator[tuple[Prometheus, float, Counter[int]]]:
    """(Prometheus, the time traffic ended, the statuses it got) after TRAFFIC_S of traffic."""
    built = shared_small_build(tmp_path_factory)
    repository = tmp_path_factory.mktemp("prometheus-repo")
    shutil.copytree(built.artifact.path, repository / "small" / built.artifact.manifest.version)
    conninfo = fresh_database(postgres_cluster)
    with serving(
        model_repository=repository,
        device="pynq",
        pynq_emulated_cards=2,
        placement={"small": ["pynq-0", "pynq-1"]},
        max_queue_delay_ms=0.01,
        shadow_fraction=1.0,
        management=True,
        database_url=conninfo,
        state_dir=tmp_path_factory.mktemp("prometheus-state"),
        admin_token=ADMIN_TOKEN,
        grpc_port=0,
    ) as url:
        h5 = built.artifact.path / "model" / "small.h5"
        ids = [upload(url, h5, "small").json()["id"] for _ in range(4)]
        target = url.removeprefix("http://")
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), [target], rule_files=[RULES]) as prom:
            deadline = time.monotonic() + 30
            while prom.targets_up() < 1:
                assert time.monotonic() < deadline, "prometheus never scraped the server"
                time.sleep(0.2)
            builds = threading.Thread(target=_builds_during_traffic, args=(conninfo, ids))
            builds.start()
            statuses = asyncio.run(_traffic(url, TRAFFIC_S))
            builds.join()
            ended = time.time()
            time.sleep(2.5)  # the last scrapes and rule evaluations after the traffic
            yield prom, ended, statuses


def test_traffic_had_successes_refusals_and_errors(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    _prom, _ended, statuses = watched
    assert statuses[200] > 100 and statuses[503] > 0 and statuses[400] > 0 and statuses[404] > 0, statuses


def test_both_inference_routes_answered(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    prom, ended, _statuses = watched
    result = prom.query(
        'sum by (route) (fpgaas_request_duration_seconds_count{status="200", model="small"})', at=ended
    )
    routes = {s["metric"]["route"] for s in result}
    assert "/predict" in routes and any(r.startswith("/v2/models/") for r in routes), routes


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return panel_queries(board)


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
def test_every_dashboard_query_returns_data(
    watched: tuple[Prometheus, float, Counter[int]], title: str, expr: str
) -> None:
    prom, ended, _statuses = watched
    # Grafana's substitutions: the rate window, and the model variable set to All
    query = expr.replace("$__rate_interval", WINDOW).replace("$model", ".*")
    result = prom.query(query, at=ended)
    assert result, f"{title}: {query} returned no series"
    assert _finite(result), f"{title}: {query} returned only NaN/Inf: {result}"


def test_the_dashboards_model_variable_lists_the_model(
    watched: tuple[Prometheus, float, Counter[int]],
) -> None:
    prom, ended, _statuses = watched
    result = prom.query("group by (model) (fpgaas_rows_total)", at=ended)
    assert {sample["metric"]["model"] for sample in result} == {"small"}


def test_both_cards_were_busy_and_healthy(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    prom, ended, _statuses = watched
    busy = prom.query(f"rate(fpgaas_card_busy_seconds_total[{WINDOW}])", at=ended)
    assert {s["metric"]["card"] for s in busy if float(s["value"][1]) > 0} == {"pynq-0", "pynq-1"}
    assert all(0 < float(s["value"][1]) <= 1 for s in busy)
    healthy = prom.query("fpgaas_card_healthy", at=ended)
    assert sorted(float(s["value"][1]) for s in healthy) == [1.0, 1.0]


def test_the_three_device_stages_are_all_measured(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    prom, ended, _statuses = watched
    result = prom.query(f"sum by (stage) (rate(fpgaas_device_stage_seconds_count[{WINDOW}]))", at=ended)
    assert {s["metric"]["stage"]: float(s["value"][1]) > 0 for s in result} == {
        "input_transfer": True,
        "kernel": True,
        "output_transfer": True,
    }


def test_supersonic_keda_expression_is_finite_and_positive(
    watched: tuple[Prometheus, float, Counter[int]],
) -> None:
    prom, ended, _statuses = watched
    [sample] = prom.query(SUPERSONIC_QUERY, at=ended)
    value = float(sample["value"][1])
    assert math.isfinite(value) and value > 0, value


@pytest.mark.parametrize(
    "record",
    [
        "fpgaas:requests:rate1m",
        "fpgaas:inference_latency_seconds:p99_5m",
        "fpgaas:http_503:ratio_5m",
        "fpgaas:device_stage_seconds:mean5m",
        "fpgaas:queue_ms_per_execution:rate30s",
    ],
)
def test_recording_rules_produce_series(watched: tuple[Prometheus, float, Counter[int]], record: str) -> None:
    prom, ended, _statuses = watched
    assert _finite(prom.query(record, at=ended)), f"{record} has no finite sample"


def test_alerts_see_the_refusals_and_no_sick_card(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    """The 503 ratio is far over 5 %: its alert is pending (it fires after 5 minutes); no card
    alert (unhealthy or shadow mismatch), no missing-server alert; the failed build fires."""
    prom, ended, _statuses = watched
    [ratio] = prom.query("fpgaas:http_503:ratio_5m", at=ended)
    alerts = {alert["labels"]["alertname"]: alert["state"] for alert in prom.alerts()}
    assert float(ratio["value"][1]) > 0
    if float(ratio["value"][1]) > 0.05:
        assert alerts.get("FpgaasHigh503Rate") == "pending", alerts
    assert "FpgaasCardUnhealthy" not in alerts and "FpgaasNoReadyServer" not in alerts, alerts
    assert "FpgaasCardShadowMismatch" not in alerts, alerts
    assert alerts.get("FpgaasBuildsFailing") == "firing", alerts


def test_shadow_verification_checked_rows_on_both_cards_and_found_none_wrong(
    watched: tuple[Prometheus, float, Counter[int]],
) -> None:
    prom, ended, _statuses = watched
    checked = prom.query("sum by (device) (fpgaas_shadow_checked_rows_total)", at=ended)
    assert {s["metric"]["device"] for s in checked if float(s["value"][1]) > 0} == {"pynq-0", "pynq-1"}
    wrong = prom.query("sum(fpgaas_shadow_mismatched_rows_total)", at=ended)
    assert [float(s["value"][1]) for s in wrong] == [0.0]


def test_the_build_queue_is_seen_once_per_state(watched: tuple[Prometheus, float, Counter[int]]) -> None:
    prom, ended, _statuses = watched
    depth = prom.query("max by (state) (fpgaas_build_queue_builds)", at=ended)
    assert {s["metric"]["state"]: float(s["value"][1]) for s in depth} == {"queued": 1.0, "running": 1.0}
    finished = prom.query("max by (state) (fpgaas_builds_finished_total)", at=ended)
    assert {s["metric"]["state"]: float(s["value"][1]) for s in finished} == {
        "succeeded": 1.0,
        "failed": 1.0,
        "cancelled": 0.0,
    }
