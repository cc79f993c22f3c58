"""fpgaas's Grafana dashboards, built with grafana-foundation-sdk.

`panels.py` lists every panel as data (title, unit, PromQL); `build.py` turns the list into a
Grafana dashboard; `python -m deploy` writes it where compose and the Helm chart read it.
"""

from deploy.dashboards.build import dashboard_json, panel_queries
from deploy.dashboards.panels import ROWS, PanelSpec, Query, RowSpec

__all__ = ["ROWS", "PanelSpec", "Query", "RowSpec", "dashboard_json", "panel_queries"]
