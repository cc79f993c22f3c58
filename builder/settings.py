"""The builder's settings, read from `FPGAAS_*` environment variables (one object per deployable).

Only what decides how artifacts are signed, where AWS F1 AFIs go and which interpreter parses Keras 3
models lives here; the build options of one model are arguments of `fpgaas.builder.build`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fpgaas.builder.afi import AfiTarget
from fpgaas.kernels.signing import PRIVATE_KEY_NAME, ensure_keypair

log = logging.getLogger("fpgaas.builder")
# `make install` creates it beside `.venv`: Keras 3 on JAX, hls4ml and HGQ2 (see fpgaas.builder.keras3).
PROJECT_KERAS3_PYTHON = Path(__file__).resolve().parents[1] / ".venv-keras3" / "bin" / "python"


class BuilderSettings(BaseSettings):
    """`FPGAAS_SIGNING_KEY_FILE`, `FPGAAS_STATE_DIR` and the AWS F1 AFI target (`FPGAAS_AFI_S3_BUCKET`,
    `FPGAAS_AFI_S3_PREFIX`, `FPGAAS_AWS_REGION`) and `FPGAAS_KERAS3_PYTHON`; other `FPGAAS_*` variables are the server's."""

    model_config = SettingsConfigDict(env_prefix="FPGAAS_", extra="ignore", frozen=True)

    signing_key_file: Path | None = Field(
        default=None,
        description="PEM ed25519 private key the builder signs manifests with (a mounted secret in a "
        "cluster); unset: <state_dir>/keys/signing.key, generated on first use",
    )
    state_dir: Path = Field(default=Path(".fpgaas"), description="where the embedded default key lives")
    afi_s3_bucket: str | None = Field(
        default=None, description="AWS F1 only: S3 bucket the AFI step uploads the design checkpoint to"
    )
    afi_s3_prefix: str = Field(default="fpgaas", description="AWS F1 only: key prefix in that bucket")
    aws_region: str = Field(default="us-east-1", description="AWS F1 only: region of the AFI")

    keras3_python: Path | None = Field(
        default=None,
        description="Python interpreter that parses Keras 3 (.keras) models in a child process; it needs "
        "Keras 3, hls4ml and, for HGQ2 models, hgq2. Unset: the project's .venv-keras3 when it exists, "
        "else the builder's own interpreter",
    )

    def keras3_interpreter(self) -> Path:
        """The interpreter the Keras 3 child runs under (not checked here: the build names it if
        it is missing)."""
        if self.keras3_python is not None:
            return self.keras3_python
        if PROJECT_KERAS3_PYTHON.is_file():
            return PROJECT_KERAS3_PYTHON
        return Path(sys.executable)

    def afi_target(self) -> AfiTarget | None:
        """Where the AWS F1 AFI step goes, or None when no bucket is configured."""
        if self.afi_s3_bucket is None:
            return None
        return AfiTarget(bucket=self.afi_s3_bucket, prefix=self.afi_s3_prefix, region=self.aws_region)

    def signing_key(self) -> Path:
        """The private key file to sign with; the embedded default pair is made when absent."""
        if self.signing_key_file is not None:
            return self.signing_key_file
        keys = self.state_dir / "keys"
        if not (keys / PRIVATE_KEY_NAME).is_file():
            log.warning("no signing key configured: generating the embedded default pair in %s", keys)
        private_path, _public_path = ensure_keypair(keys)
        return private_path
