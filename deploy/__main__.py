"""`python -m deploy`: regenerate the committed dashboard JSON and the chart's copy of the rules."""

from __future__ import annotations

from deploy.generate import ROOT, write_all

for written in write_all():
    print(f"wrote {written.relative_to(ROOT)}")
