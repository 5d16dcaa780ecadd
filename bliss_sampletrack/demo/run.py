"""``sampletrack demo``: the whole chain on a simulated beamline, in one command.

Starts, all on loopback: the tracking service (SQLite, a demo token), beacon with its Redis, and
the real BLISS session ``sampletrack_demo`` configured from ``config_examples/demo_beamline``:
a simulated sample changer ``sc`` with a simulated Keyence reader ``bcr`` on its gripper, the
tracker ``tracker`` delivering to the local service. Then it runs a scripted sequence (see
:mod:`bliss_sampletrack.demo.sequence`), prints a summary read back from Redis, the HDF5 files
and the service, and stops everything it started (also when interrupted).

With ``--shell``, a BLISS shell on that session instead of the sequence (see
:mod:`bliss_sampletrack.demo.shell`): it saves its scans under ``<workdir>/data`` as the sequence
does; Ctrl-C aborts the command being run and the demo goes on; ``exit()`` or Ctrl-D ends the
shell and stops the demo.

Ports: beacon 25000-25003 and the service 8090, plus ``--port-offset`` (two demos side by side:
``--port-offset 10``); a port in use is refused before anything starts. Everything else lives in
``--workdir`` (default: a new temporary folder, kept afterwards with the data files and the
servers' logs). Giving an earlier demo's folder again reuses it: its service database (the
timeline goes on), its tokens and its data are kept, the rest is rebuilt (see
:mod:`bliss_sampletrack.demo.workdir`); a folder the demo did not make, or one that a running
demo uses, is refused.

Secrets: the demo's two service tokens (the tracker's, and a read-only one for the timeline page)
are written to ``<workdir>/tokens.env`` (mode 0600, ``source``-able) and nowhere else: never
printed, never in a log. The tracker's token reaches the tracker through ``SAMPLETRACK_TOKEN``
in this process (and the ``--shell`` BLISS shell) only, set once beacon and its Redis are
started: no server gets it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

from bliss_sampletrack.demo.sequence import BEAMLINE
from bliss_sampletrack.demo.workdir import DemoFolder, demo_folder
from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.config_tree import copy_config_tree

log = logging.getLogger(__name__)

SESSION = "sampletrack_demo"
BEACON_BASE_PORT = 25000
SERVICE_PORT = 8090
TOKEN_ENV = "SAMPLETRACK_TOKEN"
READ_TOKEN_ENV = "SAMPLETRACK_READ_TOKEN"
TOKENS_FILE = "tokens.env"
#: --writer -> what the summary calls it
WRITERS = {
    "nexus": "NexusWriter (blisswriter's external Tango writer, as on a beamline)",
    "hdf5": "BLISS's in-process hdf5 writer",
}


def _start_nexus_writer(stack: contextlib.ExitStack, beacon_host: str, workdir: Path) -> Any:
    """blisswriter's NexusWriter for the demo session (a Tango database, the writer's device
    server), started before the session so that its first scan is written; ``TANGO_HOST`` set in
    this process, where BLISS looks the writer up at each scan; stopped with ``stack``."""
    from bliss_sampletrack.testbed.nexus_writer import writer_for_session

    _progress("starting blisswriter's NexusWriter (a Tango database and the writer's device server)")
    try:
        bed = stack.enter_context(
            writer_for_session(beacon_host, SESSION, workdir / "nexus_writer", use_instead="--writer hdf5")
        )
    except TestBedError as exc:
        raise SystemExit(f"sampletrack demo: {exc}") from None
    _progress(
        "NexusWriter ON in " + ", ".join(f"{piece} {seconds:.1f} s" for piece, seconds in bed.timings.items())
    )
    return bed


def _progress(message: str) -> None:
    try:
        print(f"[demo] {message}", flush=True)
    except OSError:
        # the terminal is gone (its window closed: SIGHUP stops the demo): the clean-up that
        # follows these messages must still run
        log.debug("progress not shown, the terminal is gone: %s", message)


#: the demo session's setup file, in the config tree
SETUP_FILE = f"sessions/{SESSION}_setup.py"


def prepare_config(target: Path, api_url: str, shell_saving: tuple[Path, str] | None = None) -> Path:
    """Copy the demo beamline's tree and point the tracker's delivery at the local service.

    ``shell_saving``: (data folder, writer) for ``--shell``: the copy's setup file then saves the
    shell's scans there, as the scripted run does (BLISS's default would be ``/tmp/scans``); the
    setup file is where that runs in the shell's own process, once its session is set up, on
    BLISS 2.0 and 2.4 alike."""
    from ruamel.yaml import YAML

    copy_config_tree(target)
    if shell_saving is not None:
        data_root, writer = shell_saving
        setup = target / SETUP_FILE
        setup.write_text(
            setup.read_text()
            + textwrap.dedent(
                f"""
                # Added by `sampletrack demo --shell` to its copy of this file: save this shell's
                # scans in the demo's work folder, as the demo's scripted run does.
                from bliss_sampletrack.demo.sequence import save_shell_scans

                save_shell_scans(current_session, {str(data_root)!r}, {writer!r})
                del save_shell_scans
                """
            )
        )
    tracker_file = target / "sampletrack" / "tracker.yml"
    yaml = YAML()  # round trip: comments kept
    nodes = yaml.load(tracker_file.read_text())
    tracker = next(node for node in nodes if node.get("name") == "tracker")
    tracker["delivery"] = [{"name": "service", "type": "rest", "url": api_url, "token_env": TOKEN_ENV}]
    with tracker_file.open("w") as stream:
        yaml.dump(nodes, stream)
    return target


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    """The demo's tokens as ``NAME=value`` lines, readable by the user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        os.fchmod(stream.fileno(), 0o600)  # also when the file was there before, with other rights
        stream.write("# tokens of the sampletrack demo's tracking service: secrets, keep this file private\n")
        stream.writelines(f"{name}={value}\n" for name, value in tokens.items())
    return path


def read_tokens(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a tokens file written by :func:`write_tokens` ({} if none)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _accepted(api_url: str, token: str) -> bool:
    """Does the service accept ``token`` (a read of one event of the demo's beamline)?"""
    import requests

    answer = requests.get(
        f"{api_url}/events",
        params={"beamline": BEAMLINE, "limit": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return answer.status_code == 200


def _interrupt_on_stop_signals() -> None:
    """SIGTERM, and SIGHUP (the terminal closed), stop the demo like Ctrl-C does: through the
    ``finally`` blocks that clean up; without this, SIGHUP would end this process at once and
    leave the servers (each in a session of its own) running."""
    import gevent

    main = gevent.getcurrent()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        gevent.signal_handler(
            signum, lambda: gevent.get_hub().loop.run_callback(main.throw, KeyboardInterrupt)
        )


def _ports(port_offset: int) -> dict[int, str]:
    first = BEACON_BASE_PORT + port_offset
    return {
        first: "beacon",
        first + 1: "beacon's Redis",
        first + 2: "beacon's data Redis",
        first + 3: "beacon's web page",
        SERVICE_PORT + port_offset: "the tracking service",
    }


def check_ports_free(port_offset: int) -> None:
    """Refuse, before anything starts, when a port of the demo is taken (SystemExit, saying what
    to do). SO_REUSEADDR, as the servers bind: a port that a stopped demo left in TIME_WAIT is
    free for them, only a listening socket is not."""
    for port, name in _ports(port_offset).items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise SystemExit(
                    f"sampletrack demo: port {port} ({name}) is in use ({exc.strerror}): is another "
                    "sampletrack demo running? Stop it, or run this one beside it with "
                    "--port-offset N (e.g. --port-offset 10)"
                ) from None


def run_demo(
    workdir: Path | None = None,
    *,
    port_offset: int = 0,
    keep: bool = False,
    shell: bool = False,
    summary_json: Path | None = None,
    writer: str = "nexus",
) -> dict[str, Any] | None:
    """The demo; its summary (None with ``shell``, or when interrupted). Refuses (SystemExit,
    saying what to do) a work folder it cannot use and ports in use, before starting anything."""
    with demo_folder(workdir) as folder:
        check_ports_free(port_offset)
        return _run(folder, port_offset, keep, shell, summary_json, writer)


def _run(
    folder: DemoFolder,
    port_offset: int,
    keep: bool,
    shell: bool,
    summary_json: Path | None,
    writer: str,
) -> dict[str, Any] | None:
    from bliss_sampletrack.demo.service_process import ServiceProcess
    from bliss_sampletrack.demo.shell import run_shell, shell_command
    from bliss_sampletrack.testbed.beacon import running_beacon
    from bliss_sampletrack.testbed.session import import_bliss, open_session

    workdir = folder.path
    import_bliss()  # gevent first
    _interrupt_on_stop_signals()
    _progress(f"working folder {workdir}")
    if folder.reused:
        _progress(
            "reusing this folder of an earlier demo: its service database (the events so far), "
            "tokens and data are kept; its configuration and servers' files are made anew, and "
            "Redis starts empty (the tracker with no recorded state, until a mount or unmount)"
        )

    service = ServiceProcess(workdir / "service.db", SERVICE_PORT + port_offset, workdir / "service.log")
    tree = prepare_config(workdir / "config", service.api_url, (workdir / "data", writer) if shell else None)
    tokens_file = workdir / TOKENS_FILE
    earlier = read_tokens(tokens_file) if folder.reused else {}
    tokens = {name: earlier[name] for name in (TOKEN_ENV, READ_TOKEN_ENV) if name in earlier}

    def new_tokens() -> dict[str, str]:
        made = {
            TOKEN_ENV: service.create_token("id00"),
            READ_TOKEN_ENV: service.create_token("id00", read_only=True),
        }
        write_tokens(tokens_file, made)
        return made

    if len(tokens) < 2:
        tokens = new_tokens()
    _progress(f"service tokens (secrets) in {tokens_file}: {TOKEN_ENV} and {READ_TOKEN_ENV} (for the page)")
    _progress(f"starting the tracking service on {service.base_url} (SQLite {workdir / 'service.db'})")
    service.start()
    summary = None
    try:
        if earlier and not all(_accepted(service.api_url, token) for token in tokens.values()):
            tokens = new_tokens()
            _progress(f"the service refused the tokens of {tokens_file}: new ones written there")
        token, read_token = tokens[TOKEN_ENV], tokens[READ_TOKEN_ENV]
        first = BEACON_BASE_PORT + port_offset
        _progress(f"starting beacon-server and its Redis on ports {first}-{first + 3}")
        with (
            running_beacon(workdir / "beacon", tree, base_port=BEACON_BASE_PORT + port_offset) as server,
            contextlib.ExitStack() as stack,
        ):
            # for the tracker of this process (and the shell's): set after beacon and its Redis
            # started, so that their environment does not hold it (the service's neither, see
            # ServiceProcess)
            os.environ[TOKEN_ENV] = token
            bed = None
            if writer == "nexus":
                bed = _start_nexus_writer(stack, server.host, workdir)
            if shell:
                _progress(
                    f"opening a BLISS shell on session {SESSION!r}: Ctrl-C aborts the command being "
                    "run; exit() or Ctrl-D ends the shell and stops the demo"
                )
                code = run_shell(
                    shell_command(SESSION),
                    env={**os.environ, "BEACON_HOST": server.host, **(bed.client_env if bed else {})},
                )
                _progress(f"the BLISS shell exited (code {code})")
                return None
            _progress(f"setting up the BLISS session {SESSION!r} (tracker, changer, reader)")
            session = open_session(server, SESSION, workdir / "data")
            try:
                from bliss_sampletrack.demo import summary as report
                from bliss_sampletrack.demo.sequence import run_sequence

                written = None
                if bed is not None:
                    nexus = bed

                    def written(scan: Any) -> float:
                        info = scan.scan_info
                        return nexus.wait_scan_written(
                            info["filename"], info["scan_nb"], scan_name=scan.identifier
                        )

                demo_log = run_sequence(
                    session,
                    workdir / "data",
                    service.stop,
                    service.start,
                    _progress,
                    writer=writer,
                    written=written,
                )
                _progress("reading everything back from Redis, the HDF5 files and the service")
                summary = report.build(
                    demo_log, server.redis_data_url, SESSION, service.api_url, read_token, BEAMLINE
                )
                summary["writer"] = WRITERS[writer]
                if bed is not None:
                    summary["writer_start_s"] = round(sum(bed.timings.values()), 2)
            finally:
                session.close()
            timeline = f"{service.api_url}/ui/?beamline={BEAMLINE}"
            report.print_summary(summary, timeline)
            summary["timeline_url"] = timeline
            summary["workdir"] = str(workdir)
            if summary_json:
                report.write_json(summary, summary_json)
            if keep:
                _progress(
                    f"servers kept running: BEACON_HOST={server.host}, service {service.base_url} "
                    f"(the page's read-only token: {READ_TOKEN_ENV} in {tokens_file}). Ctrl-C to stop."
                )
                import gevent

                gevent.wait()
    except KeyboardInterrupt:
        _progress("interrupted")
    finally:
        _progress("stopping the tracking service, beacon and Redis")
        service.stop()
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="sampletrack demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="folder for the servers' files and the data (default: new temporary folder); an "
        "earlier demo's folder is reused (its service database, tokens and data kept)",
    )
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port (default 0)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the servers running after the sequence (Ctrl-C stops)"
    )
    parser.add_argument(
        "--shell", action="store_true", help="open an interactive BLISS shell instead of the scripted run"
    )
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON to this file")
    parser.add_argument(
        "--writer",
        choices=sorted(WRITERS),
        default="nexus",
        help="nexus: blisswriter's external NexusWriter, as beamlines save (default); "
        "hdf5: BLISS's in-process writer (no Tango)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        summary = run_demo(
            args.workdir,
            port_offset=args.port_offset,
            keep=args.keep,
            shell=args.shell,
            summary_json=args.summary_json,
            writer=args.writer,
        )
    except TestBedError as exc:
        # a server did not start: the message names it and ends with its log's tail; everything
        # started before it is stopped already
        print(f"sampletrack demo: {exc}", file=sys.stderr)
        return 1
    if summary is None:
        return 0 if args.shell else 1
    return 0 if all(scan["agree"] for scan in summary["scans"]) else 1
