"""Start and stop leave nothing behind: not after stop(), a signal, a failed start, or kill -9."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from msgwatch.lab.loopback import MiniInternet, MiniInternetError, gc, unavailable
from msgwatch.lab.loopback import topology as T
from msgwatch.lab.loopback.runtime import live_entries

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(unavailable() is not None, reason=f"mini-Internet: {unavailable()}"),
]

CHILD = """
import sys, time
from msgwatch.lab.loopback import MiniInternet
net = MiniInternet().start()
print(net.entry, *[s.proc.pid for s in net.servers], flush=True)
time.sleep(30)
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead; an orphan's is reaped by init in its own time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _nothing_left(pids: list[int], entry: Path) -> None:
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
    assert not entry.exists()
    with pytest.raises(ConnectionRefusedError):  # nothing listens where nginx was
        socket.create_connection(("127.0.30.10", 443), timeout=1)


def test_stop_leaves_no_process_and_no_run_dir() -> None:
    net = MiniInternet().start()
    pids = [s.proc.pid for s in net.servers if s.proc]
    assert len(pids) == 3 and net.run_dir.is_dir() and net.catalogue_dir.is_dir()
    net.stop()
    net.stop()  # idempotent
    _nothing_left(pids, net.entry)
    assert not net.run_dir.exists()
    assert net.timings["start"] < 5 and net.timings["stop"] < 5


def test_five_cycles_in_a_row() -> None:
    for _ in range(5):
        with MiniInternet() as net:
            pids = [s.proc.pid for s in net.servers if s.proc]
        _nothing_left(pids, net.entry)
    assert live_entries() == []


def test_workdir_is_kept_with_its_logs(tmp_path: Path) -> None:
    with MiniInternet(workdir=tmp_path) as net:
        pass
    assert net.entry != tmp_path and not net.entry.exists()
    assert (tmp_path / "nginx.conf").is_file() and (tmp_path / "dnsmasq.log").is_file()


def test_failed_start_names_the_server_and_its_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((T.RESOLVER_IP, 53))  # dnsmasq cannot bind its address
        net = MiniInternet()
        with pytest.raises(MiniInternetError, match=r"^dnsmasq .*dnsmasq\.") as excinfo:
            net.start()
    assert all(_gone(s.proc.pid) for s in net.servers if s.proc)
    assert {p.suffix for p in net.entry.iterdir()} <= {".log", ".out"}  # only logs are kept
    message = str(excinfo.value)
    assert "Address already in use" in message
    assert any(str(log) in message for log in net.entry.iterdir())  # the log named is kept
    with MiniInternet():  # the kept logs are no obstacle
        pass
    assert f"removed {net.entry}" in gc(age=0)


def _child() -> tuple[subprocess.Popen[str], Path, list[int]]:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    with child.stdout:  # the child prints one line
        line = child.stdout.readline()
    if not line:
        child.wait(timeout=15)
        pytest.fail("the child's mini-Internet did not come up (its error is on stderr)")
    entry, *pids = line.split()
    return child, Path(entry), [int(p) for p in pids]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_lab(sig: signal.Signals) -> None:
    child, entry, pids = _child()
    os.kill(child.pid, sig)
    assert child.wait(timeout=10) != 0
    _nothing_left(pids, entry)


def test_gc_cleans_up_after_kill_9() -> None:
    child, entry, pids = _child()
    child.kill()
    child.wait(timeout=5)
    assert entry.exists() and not any(_gone(p) for p in pids)  # the crash left everything
    removed = gc()
    assert f"removed {entry}" in removed and len(removed) == 4
    _nothing_left(pids, entry)
    assert gc() == []
