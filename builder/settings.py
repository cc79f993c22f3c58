"""The builder's settings, read from `FPGAAS_*` environment variables (one object per deployable).

Only what decides how artifacts are signed lives here; the build options of one model are
arguments of `fpgaas.builder.build`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fpgaas.kernels.signing import PRIVATE_KEY_NAME, ensure_keypair

log = logging.getLogger("fpgaas.builder")


class BuilderSettings(BaseSettings):
    """`FPGAAS_SIGNING_KEY_FILE` and `FPGAAS_STATE_DIR`; other `FPGAAS_*` variables are the server's."""

    model_config = SettingsConfigDict(env_prefix="FPGAAS_", extra="ignore", frozen=True)

    signing_key_file: Path | None = Field(
        default=None,
        description="PEM ed25519 private key the builder signs manifests with (a mounted secret in a "
        "cluster); unset: <state_dir>/keys/signing.key, generated on first use",
    )
    state_dir: Path = Field(default=Path(".fpgaas"), description="where the embedded default key lives")

    def signing_key(self) -> Path:
        """The private key file to sign with; the embedded default pair is made when absent."""
        if self.signing_key_file is not None:
            return self.signing_key_file
        keys = self.state_dir / "keys"
        if not (keys / PRIVATE_KEY_NAME).is_file():
            log.warning("no signing key configured: generating the embedded default pair in %s", keys)
        private_path, _public_path = ensure_keypair(keys)
        return private_path
