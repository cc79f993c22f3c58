"""The fpgaas Grafana dashboard from `panels.ROWS`, with grafana-foundation-sdk's builders.

The dashboard takes its Prometheus data source from the variable `datasource` (so it works with
whatever the Grafana it lands in calls its Prometheus) and filters models with `model`.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders.common import VizLegendOptions, VizTooltipOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

from deploy.dashboards.panels import ROWS, PanelSpec

UID = "fpgaas-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _panel(spec: PanelSpec) -> Timeseries | Stat:
    panel: Timeseries | Stat
    if spec.kind == "stat":
        panel = Stat()
    else:
        panel = (
            Timeseries()
            .legend(
                VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.BOTTOM)
                .calcs(["mean", "max"])
            )
            .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
        )
    panel = panel.title(spec.title).description(spec.description).unit(spec.unit)
    panel = panel.datasource(DATASOURCE).span(spec.width).height(8)
    for query in spec.queries:
        panel = panel.with_target(
            Dataquery().expr(query.expr).legend_format(query.legend).datasource(DATASOURCE)
        )
    return panel


def dashboard() -> DashboardBuilder:
    board = (
        DashboardBuilder("fpgaas")
        .uid(UID)
        .description("fpgaas inference servers and builders: traffic, latency, device stages, cards, builds")
        .tags(["fpgaas", "fpga", "hls4ml"])
        .refresh("10s")
        .time("now-30m", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            QueryVariable("model")
            .label("model")
            .datasource(DATASOURCE)
            .query("label_values(fpgaas_rows_total, model)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for row in ROWS:
        board = board.with_row(Row(row.title))
        for spec in row.panels:
            board = board.with_panel(_panel(spec))
    return board


def dashboard_json() -> str:
    """The dashboard as Grafana JSON, sorted and indented (stable, so diffs stay readable)."""
    board = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(dashboard().build()))
    # The builders leave ids and refIds to the caller: number panels and their queries here.
    for number, panel in enumerate(board["panels"], start=1):
        panel["id"] = number
        for index, target in enumerate(panel.get("targets", [])):
            target["refId"] = chr(ord("A") + index)
    return json.dumps(board, sort_keys=True, indent=2) + "\n"


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of a dashboard JSON."""
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]
