"""Write the pinned requirements the images install: the closure of fpgaas's extras, at the
versions installed in the environment the test suite ran in (`.venv`), and the builder's Keras 3
interpreter (`builder-keras3.txt`: every distribution in `.venv-keras3`, which `make install` makes
from requirements-keras3.txt and the builder's Keras 3 and HGQ2 tests run with).

    .venv/bin/python docker/lock.py            # rewrite docker/requirements/*.txt
    .venv/bin/python docker/lock.py --check    # exit 1 if they differ from the environments

Pinning to the tested environments (rather than resolving afresh) means an image carries exactly
the library versions `make test` passed with.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent / "requirements"
KERAS3_VENV = Path(__file__).resolve().parent.parent / ".venv-keras3"
# The builder image's second venv: HGQ2 installs a `qkeras` shim over QKeras, so it cannot share one.
KERAS3_LOCK = "builder-keras3"
# image -> the extras of fpgaas it installs
IMAGES: dict[str, tuple[str, ...]] = {"server": ("server",), "builder": ("builder",), "client": ()}
# The packaging tools the venv itself brings; never pinned as dependencies.
SKIP = {"pip", "setuptools", "wheel", "fpgaas"}


def closure(extras: tuple[str, ...]) -> dict[str, str]:
    """Canonical name -> installed version for every distribution fpgaas[extras] pulls in."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("fpgaas", frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in (*wanted, "")
            ):
                continue
            dep = canonicalize_name(req.name)
            if dep == "fpgaas":
                todo.append(("fpgaas", frozenset(req.extras)))
                continue
            pins[dep] = metadata.version(dep)
            todo.append((dep, frozenset(req.extras)))
    return {n: v for n, v in sorted(pins.items()) if n not in SKIP}


def installed(venv: Path) -> dict[str, str]:
    """Canonical name -> version of every distribution installed in the virtualenv `venv`."""
    site = sorted(venv.glob("lib/python3*/site-packages"))
    if not site:
        raise SystemExit(f"{venv} is not a virtualenv; make install creates it")
    pins = {
        canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(site[0])])
    }
    return {n: v for n, v in sorted(pins.items()) if n not in SKIP}


def render(image: str) -> str:
    if image == KERAS3_LOCK:
        what, pins = (
            "the builder's Keras 3 interpreter, pinned to the tested .venv-keras3",
            installed(KERAS3_VENV),
        )
    else:
        extras = IMAGES[image]
        what = f"fpgaas[{','.join(extras)}] closure" if extras else "fpgaas (client) closure"
        what, pins = f"{what}, pinned to the tested .venv", closure(extras)
    return f"# {what}; written by docker/lock.py\n" + "".join(f"{n}=={v}\n" for n, v in pins.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args()
    stale = []
    HERE.mkdir(exist_ok=True)
    for image in (*IMAGES, KERAS3_LOCK):
        path = HERE / f"{image}.txt"
        text = render(image)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run docker/lock.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
