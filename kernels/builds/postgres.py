"""A private PostgreSQL for one machine: the embedded default of `make serve` and of the tests.

Debian's `postgresql` package (installed with apt-get when missing and we are root), `initdb`'d
into `<directory>/data` and listening on a Unix socket in `<directory>/run` only
(`listen_addresses = ''`): nothing on the network can reach it, and the socket directory is
readable by its owner only. initdb refuses to run as root, so as root the cluster belongs to
Debian's `postgres` user and its commands run through `runuser`. The database `fpgaas` is made
on first start. Lifetime: `start` until `stop` (a started cluster outlives this process;
`stop` is idempotent).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from fpgaas.kernels.errors import ToolMissing

log = logging.getLogger(__name__)

DATABASE = "fpgaas"
SUPERUSER = "postgres"
_OWNER = "postgres"  # the system user that owns the cluster when we run as root


def server_binaries() -> Path:
    """The directory holding initdb and pg_ctl; installs Debian's postgresql when missing (root)."""
    found = _find_binaries()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        log.info("PostgreSQL is not installed: installing Debian's postgresql package")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
        found = _find_binaries()
    if found is None:
        raise ToolMissing(
            "initdb (Debian's postgresql package)",
            "run the embedded PostgreSQL (or point FPGAAS_DATABASE_URL at an external one)",
        )
    return found


def _find_binaries() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class EmbeddedPostgres:
    """The cluster under `directory` (made if missing); `conninfo` reaches it once started."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).absolute()
        self.data = self.directory / "data"
        self.sockets = self.directory / "run"

    @property
    def conninfo(self) -> str:
        """libpq connection string of the database `fpgaas` over the Unix socket."""
        return f"host={self.sockets} dbname={DATABASE} user={SUPERUSER}"

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        result = self._run(["pg_ctl", "status", "-D", str(self.data)], check=False)
        return result.returncode == 0

    def start(self) -> str:
        """Initialise (first time), start (unless running) and make the database; returns `conninfo`."""
        binaries = server_binaries()
        self._prepare_directories()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            )
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# fpgaas: a private cluster, reachable through its Unix socket only\n"
                    "listen_addresses = ''\n"
                    f"unix_socket_directories = '{self.sockets}'\n"
                    "unix_socket_permissions = 0700\n"
                    "fsync = on\n"
                )
        if not self.running():
            self._run(
                [
                    str(binaries / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.directory / "postgres.log"),
                ]
            )
        self._create_database(binaries)
        return self.conninfo

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open sessions are ended, nothing committed is lost)."""
        if self.running():
            self._run([str(server_binaries() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)])

    def _create_database(self, binaries: Path) -> None:
        psql = [str(binaries / "psql"), "-h", str(self.sockets), "-U", SUPERUSER, "-d", "postgres", "-tA"]
        exists = self._run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"])
        if exists.stdout.strip() != "1":
            self._run([*psql, "-c", f"CREATE DATABASE {DATABASE}"])

    def _prepare_directories(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.data, self.sockets):
            path.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_OWNER)
            for path in (self.directory, self.data, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            unreachable = [p for p in self.directory.parents if not os.stat(p).st_mode & 0o001]
            if unreachable:
                raise PermissionError(
                    f"the {_OWNER} user cannot reach {self.directory}: {unreachable[0]} is not "
                    "searchable by others (chmod o+x it, or choose another directory)"
                )

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            command = ["runuser", "-u", _OWNER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        return result
