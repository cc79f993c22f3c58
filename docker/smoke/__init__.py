"""Smoke-test the built images without a container engine: each image's root filesystem is
mounted with `buildah mount`, and its entry point runs there the way a container would run it:

- in a private mount namespace (`unshare --mount`), the rootfs bind-mounted READ-ONLY, tmpfs on
  /tmp and /run, /proc and /dev from the host, volumes bind-mounted where compose/the chart
  mount them (the signing keys as secret files under /run/secrets, as compose.yaml does);
- `chroot --userspec=10001:10001`, with exactly the image's Env, WorkingDir, Entrypoint and Cmd
  (read from its OCI config) plus the deployment's FPGAAS_* variables, so a wrong USER, PATH or
  a write to the root fs shows up here.

The network namespace is the host's, so the server answers on loopback ports.

    builder: `fpgaas build` of models/muon-pt.h5 with FPGAAS_SIGNING_KEY_FILE=/run/secrets/signing_key
             -> manifest.sig, checked on the host against the public key; an HGQ2 `.keras` net
             written by the image's Keras 3 venv (examples/hgq2/qdense.py) and built there
    server:  `fpgaas serve` with management on a private PostgreSQL (the embedded cluster of
             `make serve`, its Unix socket bind-mounted at /run/postgresql) and
             FPGAAS_TRUSTED_KEYS=/run/secrets/signing_pub: serves the signed artifact, refuses an
             unsigned and a tampered copy; /healthz, /readyz, /predict, gRPC (tritonclient)
    worker:  `fpgaas worker` from the builder image on the same database and artifact store;
             `fpgaas upload --wait` (client image) sends muon-pt.h5 over HTTP with the admin
             token, the worker builds and signs version 2, the server hot-loads it and answers
    client:  `fpgaas --help`, the SDK predicting through the server image, the upload above

Run by `make images` after the builds (`PYTHONPATH=docker python -m smoke`); prints one line per
check and exits 1 on a failure. Modules: `rootfs` (running an image's entry point in its mounted
rootfs), `probes` (checks, HTTP, waiting), `builder` (the builder image alone), `services` (the
images together).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = "0.1.0"
