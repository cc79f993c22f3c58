"""CPU time of a server process, thread by thread or with its child processes, and the
resident memory of its process tree, from /proc (Linux).

A latency says how long a call took; the CPU a server spends per call, and on which thread,
says where that time went: on the event loop (the thread whose id is the process id), or on
helper threads (grpc's poller and event engine, a device worker). CPU time, unlike wall time,
does not count what other processes on the shared machine take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc stat line after comm (field 2, in parentheses, may hold spaces):
    [0] is field 3 (state), [1] the parent pid, [11] and [12] utime and stime in ticks."""
    return stat[stat.rindex(")") + 2 :].split()


def _live_stats() -> dict[int, list[str]]:
    """The stat fields (see `_stat_fields`) of every live process, by pid."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = _stat_fields((entry / "stat").read_text())
        except OSError:  # it exited while /proc was read
            continue
    return stats


def tree_pids(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """`pid` and its live descendants (a server's body parser processes, say); ProcessLookupError
    when `pid` is not running. `stats`: one `_live_stats()` reading to use instead of a new one."""
    stats = _live_stats() if stats is None else stats
    if pid not in stats:
        raise ProcessLookupError(f"no process {pid}")
    parent = {p: int(fields[1]) for p, fields in stats.items()}
    found = []
    for p in stats:
        q = p
        while q not in (pid, 0, 1) and q in parent:
            q = parent[q]
        if q == pid:
            found.append(p)
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its live descendants, every thread of
    each, those that ended included. A descendant that ended is not counted: a server's helpers
    live as long as it does."""
    stats = _live_stats()
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree_pids(pid, stats))
    return ticks * _TICK_S


def tree_rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of `pid` and its live descendants, MiB; one that exits while it
    is read counts nothing."""
    total_kib = 0
    for p in tree_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total_kib += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    return total_kib / 1024


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds (user + system) of each live thread of one process, by thread id."""

    pid: int
    seconds: dict[int, float]
    names: dict[int, str]

    @classmethod
    def read(cls, pid: int) -> ThreadCpu:
        """A snapshot; threads that exit while it is read are left out."""
        seconds: dict[int, float] = {}
        names: dict[int, str] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = _stat_fields(stat)
            tid = int(task.name)
            seconds[tid] = (int(fields[11]) + int(fields[12])) * _TICK_S
            names[tid] = name
        return cls(pid, seconds, names)


@dataclass(frozen=True)
class CallCpu:
    """CPU µs per call over a run: on the main (event loop) thread, and on all the others."""

    main_us: float
    others_us: float

    @property
    def total_us(self) -> float:
        return self.main_us + self.others_us


def cpu_per_call(before: ThreadCpu, after: ThreadCpu, calls: int) -> CallCpu:
    """What the process spent between two snapshots, per call; threads born in between count
    from zero, threads that ended in between are not counted (/proc no longer lists them: a
    server's loop and helper threads live as long as it does). `calls` must be positive."""
    if calls <= 0:
        raise ValueError(f"calls must be positive, got {calls}")
    spent = {tid: s - before.seconds.get(tid, 0.0) for tid, s in after.seconds.items()}
    main = spent.pop(after.pid, 0.0)
    return CallCpu(main * 1e6 / calls, sum(spent.values()) * 1e6 / calls)
