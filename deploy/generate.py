"""Every generated deployment file and what writes it; `python -m deploy` writes them all.

Single sources: the dashboard is `deploy/dashboards` (Python), the rules are
`docker/prometheus/fpgaas-rules.yml`. The Helm chart can only read files inside its own folder,
so it gets copies. `tests/deploy` fails when a committed file differs from what this writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deploy.dashboards.build import dashboard_json

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docker" / "prometheus" / "fpgaas-rules.yml"

OUTPUTS: dict[Path, Callable[[], str]] = {
    ROOT / "docker" / "grafana" / "dashboards" / "fpgaas.json": dashboard_json,
    ROOT / "helm" / "fpgaas" / "dashboards" / "fpgaas.json": dashboard_json,
    ROOT / "helm" / "fpgaas" / "files" / "fpgaas-rules.yml": RULES.read_text,
}


def write_all() -> list[Path]:
    """Write every output; returns their paths."""
    for path, make in OUTPUTS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
    return list(OUTPUTS)
