"""The Grafana dashboard is code (deploy/dashboards, grafana-foundation-sdk): the committed JSON
that compose provisions and the chart packs is exactly what the code writes, and it is a
well-formed dashboard covering what an operator of fpgaas watches. That every query returns data
from a live server is tests/deploy/test_prometheus.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.dashboards import ROWS, dashboard_json, panel_queries
from deploy.generate import OUTPUTS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "fpgaas.json"


@pytest.mark.parametrize("path", list(OUTPUTS), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_files_are_what_the_generator_writes(path: Path) -> None:
    assert path.is_file(), f"{path} is missing: run `.venv/bin/python -m deploy`"
    assert path.read_text() == OUTPUTS[path](), f"{path} is stale: run `.venv/bin/python -m deploy`"


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_dashboard_is_well_formed(board: dict[str, Any]) -> None:
    assert board["uid"] and board["title"] == "fpgaas" and board["schemaVersion"] >= 36
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and 0 not in ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["model"]["includeAll"] and variables["model"]["allValue"] == ".*"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"} and panel["fieldConfig"]["defaults"]["unit"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)) and "" not in ref_ids, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["legendFormat"], panel["title"]


def test_every_spec_panel_is_in_the_json(board: dict[str, Any]) -> None:
    titles = {p["title"] for p in board["panels"]}
    assert {row.title for row in ROWS} <= titles
    assert {spec.title for row in ROWS for spec in row.panels} <= titles
    assert len(panel_queries(board)) == sum(len(s.queries) for row in ROWS for s in row.panels)


@pytest.mark.parametrize(
    ("topic", "needle"),
    [
        (
            "request rate per model and route",
            "sum by (model, route) (rate(fpgaas_request_duration_seconds_count",
        ),
        ("latency percentiles per model and route", "histogram_quantile(0.99, sum by (le, model, route)"),
        ("the paper's three device stages", "sum by (stage) (rate(fpgaas_device_stage_seconds_sum"),
        ("queue wait", "fpgaas_queue_wait_seconds_bucket"),
        ("batch size", "fpgaas_batch_size_sum"),
        ("503 rate", 'status="503"'),
        ("error rate", "fpgaas_errors_total"),
        ("SuperSONIC's queue time", "sum(rate(nv_inference_queue_duration_us"),
        ("each card's health", "fpgaas_card_healthy"),
        ("each card's busy fraction", "rate(fpgaas_card_busy_seconds_total"),
        ("build-queue depth", "max by (state) (fpgaas_build_queue_builds)"),
        ("build durations", "fpgaas_build_duration_seconds_bucket"),
        ("failed builds", "fpgaas_builds_finished_total"),
        ("shadow verification's checked rows", "fpgaas_shadow_checked_rows_total"),
        ("shadow mismatches", "fpgaas_shadow_mismatched_rows_total"),
    ],
)
def test_dashboard_answers_the_operators_questions(board: dict[str, Any], topic: str, needle: str) -> None:
    assert any(needle in expr for _title, expr in panel_queries(board)), f"no panel shows {topic}"


def test_compose_provisions_the_dashboard_and_the_datasource() -> None:
    provider = yaml.safe_load((REPO / "docker/grafana/provisioning/dashboards/fpgaas.yaml").read_text())
    [entry] = provider["providers"]
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{entry['options']['path']}:ro" in mounts
    datasources = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert json.loads(dashboard_json()) == json.loads(DASHBOARD.read_text())
