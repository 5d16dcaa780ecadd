"""Fault injector: a real BLISS session with the tracker in a subprocess, to kill -9, pause, resume.

The child (``python -m bliss_sampletrack.testbed.faults.session ...``) opens a session of the test
bed's config tree, creates the tracker from its beacon config node (keys overridden from the
command line), and either

- ``--mode loop``: loops mount -> saved loopscan -> unmount over a seeded sequence of samples, or
- ``--mode serve``: obeys one command per line on stdin (``mount CODE``, ``unmount``, ``scan N``,
  ``state``, ``owner``, ``take_over``, ``close``, ``exit``),

and reports each step as a line ``@@ {json}`` on stdout (other lines are BLISS's own output).
Loop steps: ``ready`` (the restored snapshot), ``owned`` (another owner: waiting), ``mounting``,
``mounted``, ``scan_start``, ``scan_saved``, ``unmounting``, ``unmounted``; serve replies carry
``reply`` (the command) and ``ok``.

Public API (host side, also for the soak run)::

    driver = SessionDriver(server, data_root, mode="loop", seed=1, name="tracker",
                           overrides={"owner_ttl": 2}, wait_owner=30.0, cycles=1000, points=5)
    driver.start(timeout=180.0)                  # spawn, wait for the "ready" step
    driver.progress                              # the steps reported so far (dicts)
    driver.wait_for(step_or_predicate, timeout)  # the first matching step (waits for it)
    driver.command("mount LYS-0001", timeout)    # serve mode: send, wait for the reply
    driver.kill()                                # SIGKILL, reaped (no cleanup in the child)
    driver.pause() / driver.resume()             # SIGSTOP / SIGCONT
    driver.stop(timeout)                         # "exit" (serve) or SIGTERM, then SIGKILL
    driver.stderr_tail(lines)                    # the child's stderr, for failure messages
    kill_at_random_step(driver, rng, max_steps, max_delay)  # seeded random kill moment

Checks shared by the fault tests and the soak run: :func:`read_history`, :func:`read_outbox`,
:func:`check_event_sequence`, :func:`scan_tags` (every scan group of the HDF5 files under a
folder, read with h5py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.beacon import log_tail

log = logging.getLogger(__name__)

MARK = "@@ "
#: the demo beamline's manifest samples, and barcodes no registry knows (accepted as is)
SAMPLES = ("LYS-0001", "LYS-0002", "THA-0003", "UNK-7001", "UNK-7002")
DEFAULT_SESSION = "demo_session"


# --------------------------------------------------------------------------------------------------
# the child: a BLISS session driven in a loop or by commands
# --------------------------------------------------------------------------------------------------
def _emit(step: str, **fields: Any) -> None:
    sys.stdout.write(MARK + json.dumps({"step": step, "pid": os.getpid(), **fields}, default=str) + "\n")
    sys.stdout.flush()


def _snapshot_fields(tracker: Any) -> dict[str, Any]:
    snap = tracker.snapshot
    return {
        "state": str(snap.state),
        "barcode": None if snap.sample is None else snap.sample.barcode,
        "mount_event_id": None if snap.mount_event_id is None else str(snap.mount_event_id),
    }


def _make_tracker(name: str, node_name: str, overrides: dict[str, Any]) -> Any:
    from bliss.config.static import get_config

    from bliss_sampletrack.tracker.controller import SampleTracker

    node = get_config().get_config(node_name)
    # node.get() instantiates referenced objects ($bcr): only for keys not overridden
    config = {key: node.get(key) for key in node.keys() if key not in overrides}
    config.update(overrides)
    return SampleTracker(name, config)


def _mount_waiting(tracker: Any, barcode: str, wait_owner: float) -> None:
    """Mount; while another session owns the tracker, retry until ``wait_owner`` s have passed."""
    import gevent

    from bliss_sampletrack.errors import TrackerOwnedError

    with gevent.Timeout(wait_owner, TestBedError(f"tracker still owned by another after {wait_owner:g} s")):
        while True:
            try:
                tracker.mount(barcode)
                return
            except TrackerOwnedError as exc:
                _emit("owned", holder=exc.holder)
                gevent.sleep(0.2)


def _loop(session: Any, tracker: Any, args: argparse.Namespace) -> None:
    from bliss.common.scans import loopscan

    rng = random.Random(args.seed)
    diode = session.env_dict["diode"]
    for cycle in range(args.cycles):
        barcode = rng.choice(SAMPLES)
        _emit("mounting", cycle=cycle, barcode=barcode)
        _mount_waiting(tracker, barcode, args.wait_owner)
        _emit("mounted", cycle=cycle, **_snapshot_fields(tracker))
        scan = loopscan(args.points, 0.01, diode, run=False, save=True)
        _emit("scan_start", cycle=cycle, barcode=barcode)
        scan.run()
        info = scan.scan_info
        tag = info.get("sample", {})
        _emit(
            "scan_saved",
            cycle=cycle,
            barcode=barcode,
            scan_nb=info["scan_nb"],
            filename=info["filename"],
            tag_barcode=tag.get("barcode"),
            tag_mount_event_id=tag.get("mount_event_id"),
        )
        _emit("unmounting", cycle=cycle, barcode=barcode)
        tracker.unmount()
        _emit("unmounted", cycle=cycle, **_snapshot_fields(tracker))
    _emit("done")


def _serve(session: Any, tracker: Any) -> None:
    from gevent.fileobject import FileObjectPosix

    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)  # cooperative: the hub keeps running
    while True:
        line = stdin.readline().decode().strip()
        if not line:
            return  # EOF: the host is gone
        command, *args = line.split()
        try:
            result = _obey(session, tracker, command, args)
        except Exception as exc:  # noqa: BLE001 - reported to the host, which decides (a test driver)
            _emit("reply", reply=command, ok=False, error=type(exc).__name__, message=str(exc))
        else:
            _emit("reply", reply=command, ok=True, **result, **_snapshot_fields(tracker))
        if command == "exit":
            return


def _obey(session: Any, tracker: Any, command: str, args: list[str]) -> dict[str, Any]:
    if command == "mount":
        return {"label": tracker.mount(args[0]).label}
    if command == "unmount":
        tracker.unmount()
        return {}
    if command == "scan":
        from bliss.common.scans import loopscan

        info = loopscan(int(args[0]) if args else 3, 0.01, session.env_dict["diode"], save=True).scan_info
        tag = info.get("sample", {})
        return {
            "scan_nb": info["scan_nb"],
            "filename": info["filename"],
            "tag_barcode": tag.get("barcode"),
            "tag_mount_event_id": tag.get("mount_event_id"),
        }
    if command == "state":
        return {"warnings": tracker.warnings}
    if command == "owner":
        return {"owner": tracker.owner()}
    if command == "take_over":
        tracker.take_over()
        return {}
    if command == "close":
        tracker.close()
        return {}
    if command == "exit":
        return {}
    raise TestBedError(f"unknown command {command!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", default=DEFAULT_SESSION)
    parser.add_argument("--node", default="tracker", help="the tracker's beacon config node")
    parser.add_argument("--name", default=None, help="the tracker's name (Redis keys); default: --node")
    parser.add_argument("--data", required=True, help="SCAN_SAVING base_path")
    parser.add_argument("--mode", choices=("loop", "serve"), default="loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--wait-owner", type=float, default=30.0)
    parser.add_argument("--overrides", default="{}", help="JSON object of tracker config keys")
    args = parser.parse_args(argv)

    from bliss_sampletrack.testbed.session import import_bliss

    import_bliss()  # before anything imports blissdata (see testbed.session)
    from bliss.config.static import get_config

    session = get_config().get(args.session)
    session.setup()
    session.scan_saving.base_path = args.data
    overrides = {"reader": None, **json.loads(args.overrides)}
    tracker = _make_tracker(args.name or args.node, args.node, overrides)
    _emit("ready", **_snapshot_fields(tracker), warnings=tracker.warnings)
    if args.mode == "loop":
        _loop(session, tracker, args)
    else:
        _serve(session, tracker)
    tracker.close()
    session.close()


# --------------------------------------------------------------------------------------------------
# the host: start, watch, kill
# --------------------------------------------------------------------------------------------------
class SessionDriver:
    """A BLISS session with the tracker in a child process (see the module docstring)."""

    def __init__(
        self,
        server: Any,
        data_root: Path,
        *,
        mode: str = "loop",
        seed: int = 0,
        session: str = DEFAULT_SESSION,
        node: str = "tracker",
        name: str | None = None,
        overrides: dict[str, Any] | None = None,
        cycles: int = 1000,
        points: int = 5,
        wait_owner: float = 30.0,
    ) -> None:
        self.server, self.data_root, self.mode = server, Path(data_root), mode
        self.args = [
            f"--session={session}",
            f"--node={node}",
            f"--name={name or node}",
            f"--data={self.data_root}",
            f"--mode={mode}",
            f"--seed={seed}",
            f"--cycles={cycles}",
            f"--points={points}",
            f"--wait-owner={wait_owner}",
            f"--overrides={json.dumps(overrides or {})}",
        ]
        self.progress: list[dict[str, Any]] = []
        self.process: Any = None
        self._reader: Any = None
        self._stderr_path = self.data_root / f"driver-{os.getpid()}-{id(self)}.stderr"

    def start(self, timeout: float = 180.0) -> SessionDriver:
        """Spawn the child and wait until it reports ``ready`` (session and tracker set up)."""
        import gevent
        from gevent import subprocess as gsubprocess

        self.data_root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BEACON_HOST": self.server.host, "PYTHONUNBUFFERED": "1"}
        with self._stderr_path.open("wb") as stderr:
            self.process = gsubprocess.Popen(
                [sys.executable, "-m", "bliss_sampletrack.testbed.faults.session", *self.args],
                env=env,
                stdin=gsubprocess.PIPE,
                stdout=gsubprocess.PIPE,
                stderr=stderr,
            )
        self._reader = gevent.spawn(self._read)
        self.wait_for("ready", timeout)
        return self

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode(errors="replace")
            at = line.find(MARK)
            if at >= 0:
                self.progress.append(json.loads(line[at + len(MARK) :]))

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        return log_tail(self._stderr_path, lines, "stderr")

    def steps(self, step: str) -> list[dict[str, Any]]:
        return [p for p in self.progress if p["step"] == step]

    def wait_for(
        self, what: str | Callable[[dict[str, Any]], bool], timeout: float, start: int = 0
    ) -> dict[str, Any]:
        """The first reported step from index ``start`` that is ``what`` (a step name or a test)."""
        import gevent

        test = (lambda p: p["step"] == what) if isinstance(what, str) else what
        with gevent.Timeout(timeout, False):
            while True:
                for item in self.progress[start:]:
                    if test(item):
                        return item
                if not self.alive() and (self._reader is None or self._reader.dead):
                    break
                gevent.sleep(0.01)
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        raise TestBedError(
            f"session driver pid {self.pid} ({state}): {what!r} not reported within {timeout:g} s; "
            f"last steps {self.progress[-3:]}; stderr:\n{self.stderr_tail()}"
        )

    def command(self, text: str, timeout: float = 60.0) -> dict[str, Any]:
        """Serve mode: send one command line and wait for its reply."""
        start = len(self.progress)
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()
        return self.wait_for(lambda p: p["step"] == "reply", timeout, start)

    def kill(self) -> None:
        """SIGKILL: the child gets no chance to close the tracker, the scan or the file."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=10)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        """End the child: ``exit`` in serve mode, else SIGTERM; SIGKILL after ``timeout``."""
        from gevent import subprocess as gsubprocess

        if not self.alive():
            return self.process.returncode if self.process else None
        try:
            if self.mode == "serve":
                self.process.stdin.write(b"exit\n")
                self.process.stdin.flush()
            else:
                self._signal(signal.SIGTERM)
            return int(self.process.wait(timeout=timeout))
        except (gsubprocess.TimeoutExpired, OSError):
            self.kill()
            return self.process.returncode

    def __enter__(self) -> SessionDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            self.resume()
            self.kill()


def kill_at_random_step(
    driver: SessionDriver, rng: random.Random, max_steps: int = 12, max_delay: float = 0.4
) -> dict[str, Any]:
    """Kill -9 the driver after a seeded random number of new steps plus a random delay (so the
    kill lands anywhere: in a mount's commit, a scan, the HDF5 writer, an event's delivery).
    Returns the last step reported before the kill."""
    import gevent

    target = len(driver.progress) + rng.randint(1, max_steps)
    driver.wait_for(lambda p: len(driver.progress) >= target, timeout=180.0)
    gevent.sleep(rng.uniform(0.0, max_delay))
    driver.kill()
    return driver.progress[-1]


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------
def read_history(redis: Any, tracker: str) -> list[Any]:
    """The tracker's history in Redis, oldest first."""
    from bliss_sampletrack.core import Event

    return [Event.from_json(raw) for raw in reversed(redis.lrange(f"sampletrack:{tracker}:history", 0, -1))]


def read_outbox(redis: Any, beamline: str) -> list[tuple[str, Any]]:
    """(stream id, event) of every entry still in the beamline's outbox, in stream order."""
    from bliss_sampletrack.core import Event

    entries = redis.xrange(f"sampletrack:outbox:{beamline}")
    return [(_text(entry_id), Event.from_json(fields[b"event"])) for entry_id, fields in entries]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_event_sequence(events: list[Any]) -> None:
    """Ids unique; times never go back; each unmount closes the mount just before it (or a mount
    whose unmount was never recorded after an UNKNOWN start); no two open mounts."""
    from bliss_sampletrack.core import EventType

    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        raise AssertionError(f"duplicate event ids in {ids}")
    open_mount = None
    for before, event in zip([None, *events], events, strict=False):
        if before is not None and event.occurred_at < before.occurred_at:
            raise AssertionError(f"event {event.event_id} is older than the one before it")
        if event.type is EventType.MOUNTED:
            if open_mount is not None:
                raise AssertionError(f"mount {event.event_id} while {open_mount.event_id} is still mounted")
            open_mount = event
        else:
            if open_mount is None or event.mount_event_id != open_mount.event_id:
                raise AssertionError(f"unmount {event.event_id} does not close the open mount {open_mount}")
            open_mount = None


@dataclass(frozen=True)
class ScanTag:
    """One scan group of an HDF5 file and the sample tag found in it (None: no tag written).
    A file h5py cannot open gives one ScanTag with ``scan`` "" and the ``error``."""

    filename: str
    scan: str
    start_time: datetime | None
    tag: dict[str, Any] | None
    error: str = ""


def scan_tags(folder: Path) -> Iterator[ScanTag]:
    """Every scan group (``N.1``) of every ``*.h5`` under ``folder``, with its sample tag; a file
    or a scan group h5py cannot read (a kill -9 during the writer's write) comes with ``error``."""
    import h5py

    for path in sorted(folder.rglob("*.h5")):
        try:
            h5 = h5py.File(path, "r", locking=False)
            scans = sorted(h5, key=float)
        except (OSError, RuntimeError) as exc:  # e.g. killed while the writer created it: truncated
            yield ScanTag(str(path), "", None, None, f"{type(exc).__name__}: {exc}")
            continue
        with h5:
            for scan in scans:
                try:
                    yield _scan_tag(h5, str(path), scan)
                except (OSError, RuntimeError, KeyError, ValueError) as exc:
                    yield ScanTag(str(path), scan, None, None, f"{type(exc).__name__}: {exc}")


def _scan_tag(h5: Any, path: str, scan: str) -> ScanTag:
    group = h5[scan]
    start = group.get("start_time")
    start_time = None
    if start is not None:
        text = start[()]
        start_time = datetime.fromisoformat(text.decode() if isinstance(text, bytes) else text)
    tag = None
    if "sample" in group:
        sample = group["sample"]
        tag = {k: _decoded(v[()]) for k, v in sample.items()}
        tag.update({f"@{k}": _decoded(v) for k, v in sample.attrs.items()})
    return ScanTag(path, scan, start_time, tag)


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
