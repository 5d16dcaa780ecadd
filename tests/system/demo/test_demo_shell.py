"""``sampletrack demo --shell`` in a real terminal: a pseudo-terminal whose slave side is the demo's
controlling terminal, the demo in its foreground process group, as a terminal emulator and a
login shell run it. What is typed goes to the master side; Ctrl-C is the byte ``\\x03``, which the
kernel's line discipline turns into SIGINT for the foreground process group, as on a desktop.

- Ctrl-C during a scan aborts the scan and gives the prompt back, and so does Ctrl-C during a
  command that leaves the terminal in its normal mode (there the kernel sends SIGINT to the demo's
  process too: checked); the demo's servers (beacon, its Redis, the tracking service, the
  NexusWriter and its Tango database) keep running and the shell keeps working; the shell's scans
  are saved under ``<workdir>/data``; Ctrl-D then stops the whole demo, leaving no process behind.
- The same ``--workdir`` twice: the second run reuses the folder (service database, tokens, data);
  a third demo on that folder while it is in use is refused with a message, as is a folder that
  the demo did not make; no traceback anywhere.
- Closing the terminal (SIGHUP), or SIGTERM, stops the whole demo too, the shell first.

Each demo runs with its own HOME (BLISS writes its shell history and settings there) and a port
offset whose ports are free. The writer is blisswriter's NexusWriter where the stack has one
(BLISS 2.0.3), else BLISS's in-process writer (the BLISS 2.4 stack: see
``bliss_sampletrack/testbed/nexus_writer.py``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import gevent
import h5py
import pytest
import requests
from gevent.socket import wait_read

from bliss_sampletrack.testbed.nexus_writer import external_writer_unavailable_reason
from bliss_sampletrack.testing import alive, descendants

pytestmark = pytest.mark.bliss

SAMPLETRACK = str(Path(sys.executable).parent / "sampletrack")
PROMPT = "SAMPLETRACK_DEMO [{}]:"
#: escape sequences (CSI, OSC, charset, keypad) and carriage returns: what is left is the text
ANSI = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78NOM]|\r"
)
#: seconds the demo may take to show its shell's first prompt (servers, BLISS import, session setup)
START_S = 120.0
#: seconds the demo may take to stop everything once its shell ended
STOP_S = 60.0


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_offset(start: int) -> int:
    """A port offset whose beacon ports (25000-25003) and service port (8090) are all free."""
    for offset in range(start, start + 2000, 53):
        if all(_free(p + offset) for p in (25000, 25001, 25002, 25003, 8090)):
            return offset
    raise RuntimeError("no free port offset for the demo")


class Terminal:
    """A command on the slave side of a new pseudo-terminal (its controlling terminal; it leads
    the terminal's session and foreground process group); a greenlet reads everything it writes
    (so it never blocks on a full terminal) and answers the line editor's cursor-position
    requests as a terminal emulator does."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the command (nothing else may run here)
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        # a desktop terminal's size: BLISS's line editor lays its prompt out with it
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        os.set_blocking(fd, False)
        self.raw = bytearray()
        self.mark = 0  # where the next expect() starts looking, in text()
        self.returncode: int | None = None
        self._log = log_path.open("wb")
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            wait_read(self.fd)
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):  # every process closed it, or we did
                    return
                raise
            if not chunk:
                return
            self.raw += chunk
            self._log.write(chunk)
            self._log.flush()
            for _ in range(chunk.count(b"\x1b[6n")):
                os.write(self.fd, b"\x1b[1;1R")

    def text(self) -> str:
        return ANSI.sub(b"", bytes(self.raw)).decode(errors="replace")

    def expect(self, pattern: str, timeout: float, *, literal: bool = False) -> re.Match[str]:
        """Wait for ``pattern`` (a regex, or the text itself with ``literal``) in what the terminal
        showed after the previous match; fails with the tail of it on timeout or when the command
        ended first."""
        regex = re.compile(re.escape(pattern) if literal else pattern)
        with gevent.Timeout(timeout, False):
            while True:
                match = regex.search(self.text(), self.mark)
                if match:
                    self.mark = match.end()
                    return match
                if self.exited() is not None and self._reader.dead:
                    break
                gevent.sleep(0.1)
        raise AssertionError(
            f"{pattern!r} not shown in {timeout:.0f} s (exit code {self.returncode}); the terminal "
            f"showed after the previous match:\n{self.text()[self.mark :][-4000:]}"
        )

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exited(self) -> int | None:
        """The command's exit code (negative: the signal that ended it), or None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        with gevent.Timeout(timeout, AssertionError(f"the demo did not end in {timeout:.0f} s")):
            while self.exited() is None:
                gevent.sleep(0.1)
        assert self.returncode is not None
        return self.returncode

    def close(self) -> None:
        """Close the master side: for the command, the terminal window is closed (SIGHUP)."""
        if self.fd >= 0:
            self._reader.kill()  # first: it waits on this descriptor
            os.close(self.fd)
            self.fd = -1

    def kill(self) -> None:
        """The end of a failed test: SIGKILL the command and everything it started."""
        if self.exited() is None:
            for pid in descendants(self.pid):
                with contextlib.suppress(ProcessLookupError):  # gone already: fine
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # gone already: fine
                os.kill(self.pid, signal.SIGKILL)
            self.wait(STOP_S)
        self.close()
        self._log.close()


def demo_env(home: Path) -> dict[str, str]:
    """The test's environment for a demo: its own HOME, no token or server address of ours, a
    terminal that says its colours (BLISS asks the terminal otherwise, waiting 2 s for no answer)."""
    home.mkdir(parents=True, exist_ok=True)
    dropped = ("BEACON_HOST", "TANGO_HOST", "ORBendPoint")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLETRACK") and k not in dropped}
    env.update(HOME=str(home), TERM="xterm-256color", COLORFGBG="15;0", LANG="C.UTF-8")
    return env


def start_demo(workdir: Path, offset: int, writer: str, home: Path, log_path: Path) -> Terminal:
    argv = [SAMPLETRACK, "demo", "--shell", "--workdir", str(workdir), "--port-offset", str(offset)]
    return Terminal([*argv, "--writer", writer], demo_env(home), log_path)


def servers_of(demo: Terminal) -> dict[int, str]:
    """The demo's servers among its processes (the shell and short-lived helpers left out)."""
    names = ("beacon-server", "redis-server", "sampletrack-service serve", "NexusWriterService", "databaseds")
    return {pid: cmd for pid, cmd in descendants(demo.pid).items() if any(name in cmd for name in names)}


def command(demo: Terminal, line: str, number: int, timeout: float = 60.0) -> str:
    """Type ``line`` at prompt ``number``; what it printed before prompt ``number + 1``."""
    demo.send(line + "\r")
    start = demo.mark
    demo.expect(re.escape(PROMPT.format(number + 1)), timeout)
    return demo.text()[start : demo.mark]


def wait_entries(path: Path, entries: set[str], timeout: float = 30.0) -> set[str]:
    """The entries of HDF5 file ``path`` once it has ``entries`` (read without a lock: a writer
    may hold the file)."""
    seen: set[str] = set()
    with gevent.Timeout(timeout, False):
        while not entries <= seen:
            try:
                with h5py.File(path, "r", locking=False) as h5:
                    seen = set(h5.keys())
            except (OSError, KeyError):
                pass  # not there yet, or caught mid-write
            gevent.sleep(0.2)
    assert entries <= seen, (path, sorted(seen))
    return seen


@pytest.fixture
def demos() -> Iterator[list[Terminal]]:
    """The demos a test starts: killed with everything they started if the test left them running."""
    started: list[Terminal] = []
    yield started
    for demo in started:
        demo.kill()


def the_writer() -> str:
    return "hdf5" if external_writer_unavailable_reason() else "nexus"


def dataset_folder(demo: Terminal, workdir: Path) -> Path:
    """Where the shell saves, as it says at start-up: under ``<workdir>/data``."""
    saved = demo.expect(r"scans are saved under (\S+) .*?this dataset's folder: (\S+)", START_S)
    assert Path(saved[1]) == workdir / "data"
    assert Path(saved[2]).is_relative_to(workdir / "data"), saved[2]
    return Path(saved[2])


def scan_file(folder: Path) -> Path:
    """The one HDF5 file of a dataset folder (the dataset's file; the writer makes it)."""
    files: list[Path] = []
    with gevent.Timeout(30, False):
        while not files:
            files = sorted(folder.glob("*.h5"))
            gevent.sleep(0.2)
    assert len(files) == 1, (folder, files)
    return files[0]


def exit_with_ctrl_d(demo: Terminal) -> None:
    demo.send("\x04")
    demo.expect(r"Do you really want to (exit|close session)\?", 30)  # BLISS 2.0 | 2.4 asks
    demo.send("y")


def test_ctrl_c_aborts_the_scan_and_the_demo_goes_on(tmp_path: Path, demos: list[Terminal]) -> None:
    workdir, writer = tmp_path / "demo", the_writer()
    demo = start_demo(workdir, free_offset(1500), writer, tmp_path / "home", tmp_path / "terminal.log")
    demos.append(demo)
    folder = dataset_folder(demo, workdir)
    demo.expect(re.escape(PROMPT.format(1)), START_S)
    servers = servers_of(demo)
    expected = ["beacon-server", "redis-server 127", "sampletrack-service"]
    expected += ["NexusWriterService", "databaseds"] if writer == "nexus" else []
    for name in expected:
        assert any(name in cmd for cmd in servers.values()), (name, servers)

    # Ctrl-C during a scan: BLISS aborts it and shows its prompt again
    demo.send("loopscan(1000, 0.1, diode)\r")
    # the scan runs (BLISS 2.0 shows "loopscan: step 3/1000", 2.4 a state column); a few points
    demo.expect(r"loopscan: step [3-9]/1000|RUNNING", 60)
    gevent.sleep(1)
    demo.send("\x03")
    demo.expect(r"ScanAbort|KeyboardInterrupt", 30)
    demo.expect(re.escape(PROMPT.format(2)), 30)
    # Ctrl-C during a command that leaves the terminal in its normal mode (BLISS 2.0's scans do,
    # 2.4's scan display reads Ctrl-C as a key): the kernel sends SIGINT to the whole foreground
    # process group, the demo's process included, the case that ended the whole demo
    demo.send("sleep(60)\r")
    gevent.sleep(1)
    assert termios.tcgetattr(demo.fd)[3] & termios.ISIG, "the terminal does not turn Ctrl-C into SIGINT"
    demo.send("\x03")
    demo.expect("KeyboardInterrupt", 30, literal=True)
    demo.expect(re.escape(PROMPT.format(3)), 30)
    gevent.sleep(2)  # a demo that stops would have begun to by now
    assert demo.exited() is None, demo.text()[-3000:]
    assert [pid for pid in servers if not alive(pid)] == [], servers
    assert "[demo] interrupted" not in demo.text()
    assert "stopping the tracking service" not in demo.text()

    # the shell goes on: the tracker answers, a scan runs to its end
    shown = command(demo, "tracker", 3)
    assert "SampleTracker 'tracker' (beamline id00)" in shown, shown
    shown = command(demo, "loopscan(3, 0.01, diode)", 4)
    assert "Error" not in shown, shown
    # both scans (the aborted one too) are in the dataset's file, in the work folder
    wait_entries(scan_file(folder), {"1.1", "2.1"})

    # Ctrl-D ends the shell and the demo: every process it started is gone
    started = descendants(demo.pid)
    exit_with_ctrl_d(demo)
    demo.expect("stopping the tracking service, beacon and Redis", STOP_S, literal=True)
    assert demo.wait(STOP_S) == 0, demo.text()[-3000:]
    assert {pid: cmd for pid, cmd in started.items() if alive(pid)} == {}
    assert "Traceback" not in demo.text()


def _read_token(workdir: Path) -> str:
    lines = (workdir / "tokens.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))[
        "SAMPLETRACK_READ_TOKEN"
    ]


def test_the_same_workdir_twice_reuses_it(tmp_path: Path, demos: list[Terminal]) -> None:
    workdir, home, offset = tmp_path / "demo", tmp_path / "home", free_offset(1600)
    first = start_demo(workdir, offset, "hdf5", home, tmp_path / "first.log")
    demos.append(first)
    first_folder = dataset_folder(first, workdir)
    first.expect(re.escape(PROMPT.format(1)), START_S)
    shown = command(first, 'sc.mount("1:01")', 1)
    assert "Traceback" not in shown and "Error" not in shown, shown
    command(first, "tracker.drain(30)", 2)  # the mount is in the service before we leave
    command(first, "loopscan(2, 0.01, diode)", 3)
    first_file = scan_file(first_folder)
    tokens = (workdir / "tokens.env").read_text()
    first.send("exit()\r")
    assert first.wait(STOP_S) == 0, first.text()[-3000:]
    assert "Traceback" not in first.text()

    second = start_demo(workdir, offset, "hdf5", home, tmp_path / "second.log")
    demos.append(second)
    second.expect("reusing this folder of an earlier demo", 30, literal=True)
    second_folder = dataset_folder(second, workdir)
    second.expect(re.escape(PROMPT.format(1)), START_S)
    # kept: the tokens (the service still takes them) and the service's events of the first run
    assert (workdir / "tokens.env").read_text() == tokens
    answer = requests.get(
        f"http://127.0.0.1:{8090 + offset}/api/v1/events",
        params={"beamline": "id00", "limit": 100},
        headers={"Authorization": f"Bearer {_read_token(workdir)}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert [(e["type"], e["sample"]["barcode"]) for e in answer.json()["events"]] == [("mounted", "LYS-0001")]
    # kept: the data; a new scan goes to a new dataset's file
    assert second_folder != first_folder
    command(second, "loopscan(2, 0.01, diode)", 1)
    wait_entries(first_file, {"1.1"})
    wait_entries(scan_file(second_folder), {"1.1"})

    # a third demo on the folder in use is refused before it starts anything, with what to do
    third = subprocess.run(
        [SAMPLETRACK, "demo", "--workdir", str(workdir), "--port-offset", str(free_offset(1700))],
        capture_output=True,
        text=True,
        timeout=60,
        env=demo_env(home),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert third.returncode == 1, third
    assert f"--workdir {workdir} is in use by another sampletrack demo (pid {second.pid})" in third.stderr
    assert "Traceback" not in third.stdout + third.stderr

    second.send("exit()\r")
    assert second.wait(STOP_S) == 0, second.text()[-3000:]
    assert "Traceback" not in second.text()


def test_a_folder_the_demo_did_not_make_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = subprocess.run(
        [SAMPLETRACK, "demo", "--workdir", str(mine)],
        capture_output=True,
        text=True,
        timeout=60,
        env=demo_env(tmp_path / "home"),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 1, result
    assert f"--workdir {mine} is not empty and was not made by sampletrack demo" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]  # nothing touched


@pytest.mark.parametrize("how", ["the terminal closed", "SIGTERM"])
def test_the_demo_stopped_from_outside_stops_everything(
    how: str, tmp_path: Path, demos: list[Terminal]
) -> None:
    demo = start_demo(tmp_path / "demo", free_offset(1800), "hdf5", tmp_path / "home", tmp_path / "t.log")
    demos.append(demo)
    demo.expect(re.escape(PROMPT.format(1)), START_S)
    started = descendants(demo.pid)
    assert len(servers_of(demo)) == 4, started  # beacon, its two Redis, the service
    if how == "SIGTERM":
        os.kill(demo.pid, signal.SIGTERM)
        demo.expect("stopping the tracking service, beacon and Redis", STOP_S, literal=True)
    else:
        demo.close()  # the terminal window is closed: SIGHUP
    demo.wait(STOP_S)
    # the demo stopped them itself (no signal of the terminal reaches them: they run in sessions
    # of their own), the shell first
    assert {pid: cmd for pid, cmd in started.items() if alive(pid)} == {}
    assert (tmp_path / "demo" / "service.log").read_text().rstrip().endswith("stopped")
