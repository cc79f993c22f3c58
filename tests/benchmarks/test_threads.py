"""Per-thread CPU accounting (`benchmarks/httpbench/threads.py`): a busy helper thread's CPU is
charged to "other threads", the calling thread's to the main one, and per call; a process's
CPU with its descendants counts a grandchild's."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.httpbench.threads import ThreadCpu, cpu_per_call, tree_cpu_s, tree_pids, tree_rss_mib


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_snapshot_lists_this_process_threads_by_name() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="snapshot-probe")
    worker.start()
    try:
        snapshot = ThreadCpu.read(os.getpid())
    finally:
        stop.set()
        worker.join()
    assert os.getpid() in snapshot.seconds
    assert worker.native_id in snapshot.seconds
    assert snapshot.names[os.getpid()]  # the main thread's comm: the program's name
    assert all(s >= 0 for s in snapshot.seconds.values())


def test_cpu_spent_on_a_helper_thread_is_charged_to_the_other_threads_per_call() -> None:
    spun, stop = threading.Event(), threading.Event()

    def helper() -> None:
        _spin(0.3)
        spun.set()
        stop.wait()  # alive at the second snapshot: /proc forgets a thread once it ends

    before = ThreadCpu.read(os.getpid())
    worker = threading.Thread(target=helper)  # born after the first snapshot: counted from zero
    worker.start()
    spun.wait()
    _spin(0.1)  # on the main thread
    after = ThreadCpu.read(os.getpid())
    stop.set()
    worker.join()
    cpu = cpu_per_call(before, after, 100)
    # Clock ticks are 10 ms: 0.3 s on the helper is 3,000 µs per call, within a tick or two.
    assert cpu.others_us == pytest.approx(3000, abs=300)
    assert cpu.main_us == pytest.approx(1000, abs=300)
    assert cpu.total_us == pytest.approx(cpu.main_us + cpu.others_us)


def test_no_calls_is_refused() -> None:
    snapshot = ThreadCpu.read(os.getpid())
    with pytest.raises(ValueError, match="positive"):
        cpu_per_call(snapshot, snapshot, 0)


# The grandchild: spins 0.4 s of CPU, says so, and waits for its stdin to close.
_SPIN = """
import time
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("spun", flush=True)
input()
"""
# The child: starts the grandchild, prints its pid once it has spun, and waits likewise.
_GRANDCHILD = f"""
import subprocess, sys
spin = {_SPIN!r}
child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline() == "spun\\n"
print(child.pid, flush=True)
input()
"""


def test_a_process_tree_counts_the_cpu_of_a_grandchild_still_alive() -> None:
    # This test's process starts a child, which starts a grandchild that spins 0.4 s of CPU and
    # then waits: the child's tree holds the grandchild's 0.4 s; its own CPU is only its start-up.
    child = subprocess.Popen(
        [sys.executable, "-c", _GRANDCHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        tree, grandchild_alone = tree_cpu_s(child.pid), tree_cpu_s(grandchild)
        assert grandchild_alone == pytest.approx(0.4, abs=0.1)
        assert tree >= grandchild_alone
        assert tree_cpu_s(os.getpid()) >= tree  # this process's tree holds both
    finally:
        child.communicate("\n", timeout=30)


def test_a_process_tree_holds_a_grandchild_and_its_resident_memory() -> None:
    # The grandchild touches 64 MiB and waits: the child's tree holds it and its memory.
    holder = "import sys; block = bytearray(64 << 20); print('held', flush=True); sys.stdin.readline()"
    spawn = (
        "import subprocess, sys\n"
        f"g = subprocess.Popen([sys.executable, '-c', {holder!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
        "assert g.stdout.readline() == 'held\\n'\n"
        "print(g.pid, flush=True)\n"
        "input()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", spawn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert set(tree_pids(child.pid)) >= {child.pid, grandchild}
        assert tree_pids(grandchild) == [grandchild]  # a tree holds no parents
        assert tree_rss_mib(grandchild) >= 64
        assert tree_rss_mib(child.pid) >= tree_rss_mib(grandchild)
    finally:
        child.communicate("\n", timeout=30)


def test_a_process_that_is_not_there_is_refused() -> None:
    with pytest.raises(ProcessLookupError):
        tree_cpu_s(2**22 + 1)  # above pid_max's default ceiling
