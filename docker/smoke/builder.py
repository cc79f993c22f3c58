"""The builder image on its own: signed builds of a Keras 2 / QKeras `.h5` and of an HGQ2 `.keras`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from fpgaas.kernels.signing import TrustedKeys, generate_keypair
from smoke import ROOT, TAG
from smoke.probes import check, verified_on_host
from smoke.rootfs import SECRETS, Volumes, container, mounted, owned

KERAS3_PYTHON = "/opt/keras3/bin/python"


def make_keys(tmp: Path) -> Path:
    """A signing key pair in `tmp/keys` named as compose's secrets are, readable by uid 10001 only."""
    private, public = generate_keypair(tmp / "keys")
    keys = tmp / "secrets"
    keys.mkdir()
    shutil.copy(private, keys / "signing_key")
    shutil.copy(public, keys / "signing_pub")
    owned(keys)
    os.chmod(keys / "signing_key", 0o400)
    return keys


def smoke_builder(tmp: Path, keys: Path) -> Path:
    """Build muon-pt version 1 in the builder image, signed; returns the artifact directory."""
    out = owned(tmp / "built")
    (tmp / "in").mkdir()
    shutil.copy(ROOT / "models" / "muon-pt.h5", tmp / "in" / "muon-pt.h5")
    with mounted(f"localhost/fpgaas-builder:{TAG}") as (rootfs, config):
        cmd = container(
            rootfs,
            config,
            ["build", "/mnt/muon-pt.h5", "--name", "muon-pt", "--version", "1", "--out", "/models/muon-pt/1"],
            {"/models": (out, False), "/mnt": (tmp / "in", True), SECRETS: (keys, True)},
            {"FPGAAS_SIGNING_KEY_FILE": f"{SECRETS}/signing_key"},
        )
        start = time.monotonic()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    artifact = out / "muon-pt" / "1"
    check(
        "builder: fpgaas build muon-pt.h5 (read-only root, uid 10001, key from /run/secrets)",
        run.returncode == 0 and (artifact / "manifest.json").is_file(),
        f"{time.monotonic() - start:.0f} s; {run.stdout.strip().splitlines()[0] if run.stdout else run.stderr[-400:]}",
    )
    engine = json.loads((artifact / "manifest.json").read_text()).get("engine")
    check("builder: sealed manifest names its engine", bool(engine), str(engine))
    signature = (
        json.loads((artifact / "manifest.sig").read_text()) if (artifact / "manifest.sig").is_file() else {}
    )
    trusted = TrustedKeys.load([keys / "signing_pub"])
    verified = verified_on_host(artifact, keys / "signing_pub")
    check(
        "builder: manifest.sig is an ed25519 signature by the given key",
        signature.get("key_id") in trusted.ids and verified == "verified on the host",
        f"key {str(signature.get('key_id'))[:16]}…, {verified}",
    )
    return artifact


def smoke_hgq2(tmp: Path, keys: Path) -> Path:
    """An HGQ2 `.keras` net written and built in the builder image, signed: HGQ2 lives in its second
    venv (/opt/keras3, which FPGAAS_KERAS3_PYTHON names), where the build's Keras 3 child parses
    it. Returns the artifact directory (the server image serves it in `smoke_services`)."""
    work = owned(tmp / "hgq2")
    with mounted(f"localhost/fpgaas-builder:{TAG}") as (rootfs, config):
        keras3 = dict(str(e).split("=", 1) for e in config.get("Env") or []).get("FPGAAS_KERAS3_PYTHON")
        check("builder: FPGAAS_KERAS3_PYTHON names the Keras 3 venv", keras3 == KERAS3_PYTHON, str(keras3))
        volumes: Volumes = {"/models": (work, False), "/mnt": (ROOT / "examples" / "hgq2", True)}
        writer = {**config, "Entrypoint": [KERAS3_PYTHON]}
        run = subprocess.run(
            container(
                rootfs, writer, ["/mnt/qdense.py", "/models/hgq2.keras"], volumes, {"JAX_PLATFORMS": "cpu"}
            ),
            capture_output=True,
            text=True,
            timeout=600,
        )
        check(
            "builder: its Keras 3 interpreter writes an HGQ2 QDense net (examples/hgq2/qdense.py)",
            run.returncode == 0 and (work / "hgq2.keras").is_file(),
            f"exit {run.returncode}" + (f": {run.stderr[-400:]!r}" if run.returncode else ""),
        )
        start = time.monotonic()
        run = subprocess.run(
            container(
                rootfs,
                config,
                ["build", "/models/hgq2.keras", "--name", "hgq2", "--out", "/models/hgq2/1"],
                {**volumes, SECRETS: (keys, True)},
                {"FPGAAS_SIGNING_KEY_FILE": f"{SECRETS}/signing_key"},
            ),
            capture_output=True,
            text=True,
            timeout=900,
        )
    artifact = work / "hgq2" / "1"
    check(
        "builder: fpgaas build hgq2.keras (HGQ2, parsed by the Keras 3 venv's hls4ml)",
        run.returncode == 0
        and (artifact / "manifest.json").is_file()
        and (artifact / "logs" / "keras3.log").is_file(),
        f"{time.monotonic() - start:.0f} s; {run.stdout.strip().splitlines()[0] if run.stdout else run.stderr[-400:]}",
    )
    layers = json.loads((artifact / "manifest.json").read_text())["layers"]
    check(
        "builder: the HGQ2 quantizers became fixed-point types of the artifact",
        any("AP_RND,AP_WRAP" in str(layer.get("types")) for layer in layers),
        f"{len(layers)} layers",
    )
    verified = verified_on_host(artifact, keys / "signing_pub")
    check(
        "builder: the HGQ2 build is signed with the given key", verified == "verified on the host", verified
    )
    return artifact
