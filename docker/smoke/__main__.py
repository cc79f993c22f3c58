"""`python -m smoke`: the builder image alone, then the images together (see smoke/__init__.py)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from smoke import ROOT
from smoke.builder import make_keys, smoke_builder, smoke_hgq2
from smoke.probes import Failed
from smoke.services import smoke_services


def main() -> int:
    (ROOT / "build" / "images").mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=ROOT / "build" / "images") as name:
            tmp = Path(name)
            keys = make_keys(tmp)
            artifact = smoke_builder(tmp, keys)
            hgq2 = smoke_hgq2(tmp, keys)
            smoke_services(tmp, keys, artifact, hgq2)
    except Failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
