"""Server processes for the benchmark: started on a free loopback port, pinned to a core, always stopped.

`running(...)` is a context manager: it starts the server (behind `taskset -c <core>`), waits for
its readiness URL to answer 200, checks that its port listens on 127.0.0.1 only, and on exit (also
on errors) sends SIGTERM, then SIGKILL after a timeout. Each server's output goes to a log file
whose tail is quoted when it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start, did not become ready, or listened beyond the loopback address."""


@dataclass(frozen=True)
class Cores:
    """Where the server and the load generator run (the same core on a 1-CPU machine)."""

    server: int
    load: int
    available: int  # CPUs this process could use at the start (what `nproc` prints)

    @classmethod
    def pick(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        return cls(cpus[0], cpus[1] if len(cpus) > 1 else cpus[0], len(cpus))


@dataclass
class Server:
    """A running server: its base URL, process and log (valid inside `running`)."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def tcp_counters() -> dict[str, int]:
    """The machine's TCP counters: /proc/net/snmp `Tcp:` (e.g. RetransSegs, EstabResets) and
    /proc/net/netstat `TcpExt:` (e.g. TCPTimeouts, TCPLossProbes); {} for a table it cannot read."""
    counters: dict[str, int] = {}
    for table, prefix in (("/proc/net/snmp", "Tcp:"), ("/proc/net/netstat", "TcpExt:")):
        try:
            rows = [
                line.split()[1:] for line in Path(table).read_text().splitlines() if line.startswith(prefix)
            ]
        except OSError:
            continue
        if len(rows) == 2:
            counters.update({name: int(value) for name, value in zip(rows[0], rows[1], strict=True)})
    return counters


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def pinned(argv: Sequence[str], core: int) -> list[str]:
    """`argv` run on one CPU core (taskset execs it: the pid stays the program's)."""
    if shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


def _check_loopback_only(name: str, port: int) -> None:
    addresses = listening_addresses(port)
    if addresses and addresses != {"0100007F"}:  # 127.0.0.1, little-endian hex
        raise ServerError(f"{name} listens on {sorted(addresses)} (hex), not only 127.0.0.1")


def _wait_ready(server: Server, ready_path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + ready_path, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ServerError(f"{server.name} was not ready within {timeout_s:.0f} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


@contextmanager
def running(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    ready_path: str,
    core: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout_s: float = 90.0,
) -> Iterator[Server]:
    """Run `argv` (which must listen on 127.0.0.1:`port`) pinned to `core` until the block ends."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(argv, core),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    server = Server(name, f"http://{LOOPBACK}:{port}", port, process, log)
    try:
        _wait_ready(server, ready_path, ready_timeout_s)
        _check_loopback_only(name, port)
        yield server
    finally:
        stop(process)
