"""The README's first command, ``bash tools/demo.sh``, end to end: its summary must match what this
test reads independently from Redis (blissdata), the HDF5 files (h5py) and the service's API; and
none of its artefacts may hold one of its secrets.

The demo runs once for the module (``--keep``: its servers stay up until the last test stops it):
the summary test, the puck inventory of its last step, then the secret search while its servers
run (both Redis databases, the environment of every process it started, ``sampletrack status``),
then, once stopped, the search of everything it left (its output, the summary, every file of its
working folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import pytest
import requests
from secret_search import file_hits, redis_hits, secret_forms, text_hits

from bliss_sampletrack.testing import as_text, descendants

REPO = Path(__file__).resolve().parents[3]
DEFAULT_VENV = REPO / ".venv"

pytestmark = [
    pytest.mark.bliss,
    pytest.mark.skipif(
        Path(sys.prefix).resolve() != DEFAULT_VENV.resolve(),
        reason="the README's demo command runs on the default stack (.venv); run once, from there",
    ),
]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def free_offset() -> int:
    for offset in range(100, 2000, 37):
        if all(
            _free(p) for p in (25000 + offset, 25001 + offset, 25002 + offset, 25003 + offset, 8090 + offset)
        ):
            return offset
    raise RuntimeError("no free port offset for the demo")


def check_timeline_page(db: Path, token: str, stored: list[dict[str, Any]], folder: Path) -> None:
    """The service's timeline page on the demo's database, in headless Chromium: the three samples
    mounted in turn are bars of the id00 timeline. (The page takes its token from sessionStorage,
    where a user types it; the test harness app puts it there, serving the same database.)"""
    import shutil
    from urllib.parse import quote

    from web_page import Dom, harness, run_chromium

    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: tools/setup-system.sh installs it"
    day = stored[0]["occurred_at"][:10]
    view = f"/api/v1/ui/?beamline=id00&since={day}T00:00:00Z&until={day}T23:59:59Z"
    page = harness(f"sqlite:///{db}", token, folder)
    try:
        url = page.base_url.rsplit("/api/v1", 1)[0] + "/harness?to=" + quote(view, safe="")
        result = run_chromium(chromium, url, folder, "--dump-dom")
        shot = folder / "demo-timeline.png"
        run_chromium(chromium, url, folder, "--window-size=1280,1000", f"--screenshot={shot}")
    finally:
        page.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    assert dom.body_state == "ready", result.stdout[:2000]
    bars = [text for _, text in dom.bars]
    for label in ("lysozyme_1 (LYS-0001)", "lysozyme_2 (LYS-0002)", "thaumatin_3 (THA-0003)"):
        assert label in bars, bars
    assert shot.exists() and shot.stat().st_size > 20_000
    assert token not in result.stdout


@dataclass
class DemoRun:
    """``tools/demo.sh --keep`` running: its sequence done, its servers still up until :meth:`stop`."""

    workdir: Path
    summary_file: Path
    output: Path
    offset: int
    process: subprocess.Popen[bytes]
    stopped: bool = False

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(p + self.offset for p in (25000, 25001, 25002, 8090))

    def stop(self) -> None:
        """Ctrl-C, as a user stops a kept demo."""
        if self.stopped:
            return
        self.stopped = True
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise

    def tokens(self) -> dict[str, str]:
        """The demo's tokens, from the one file it writes them to."""
        lines = (self.workdir / "tokens.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    folder = tmp_path_factory.mktemp("demo_run")
    workdir, summary_file, output = folder / "demo", folder / "summary.json", folder / "demo.out"
    offset = free_offset()
    command = [
        "bash",
        str(REPO / "tools" / "demo.sh"),
        "--workdir",
        str(workdir),
        "--summary-json",
        str(summary_file),
    ]
    command += ["--keep", "--port-offset", str(offset)]
    with output.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    run = DemoRun(workdir, summary_file, output, offset, process)
    try:
        import gevent

        with gevent.Timeout(400, AssertionError("the demo did not finish its sequence in time")):
            while not summary_file.exists():
                assert process.poll() is None, output.read_text()[-3000:]
                gevent.sleep(0.5)
        yield run
    finally:
        run.stop()


def test_demo_command_summary_matches_redis_hdf5_and_service(demo: DemoRun, tmp_path: Path) -> None:
    assert not demo.stopped, "run this module's tests in file order: the last one stops the demo"
    workdir, summary_file, output, offset = demo.workdir, demo.summary_file, demo.output, demo.offset
    summary = json.loads(summary_file.read_text())
    printed = output.read_text()

    # what the sequence must have shown
    scans = summary["scans"]
    assert len(scans) == 8 and all(s["agree"] for s in scans), json.dumps(scans, indent=1)
    states = [s["redis"]["state"] for s in scans]
    assert states == ["MOUNTED"] * 7 + ["EMPTY"]
    assert [s["redis"]["barcode"] for s in scans[:7]] == ["LYS-0001"] * 2 + ["LYS-0002"] * 2 + [
        "UNK-0042"
    ] + ["THA-0003"] * 2
    notes = " ".join(summary["notes"])
    assert "no-read refused" in notes and "UNK-0042" in notes and "dropped" in notes and "pending" in notes
    assert "Timeline page of the tracking service" in printed
    # the production writer by default: blisswriter's NexusWriter wrote every file
    assert summary["writer"].startswith("NexusWriter") and "Writer: NexusWriter" in printed
    assert 0 < summary["writer_start_s"] < 30
    assert all(s["writer_wait_s"] is not None for s in scans)

    # Redis, read here with a fresh blissdata client (the servers are kept running)
    from blissdata.redis_engine.store import DataStore

    store = DataStore(f"redis://127.0.0.1:{25002 + offset}")
    _, keys = store.search_existing_scans(session="sampletrack_demo")
    infos = {(i["filename"], int(i["scan_nb"])): i for i in (store.load_scan(k).info for k in keys)}
    for scan in scans:
        tag = infos[(scan["filename"], scan["scan_nb"])]["sample"]
        for key, value in scan["redis"].items():
            assert tag.get(key) == value, (scan, key)
        # the HDF5 file, read here
        with h5py.File(scan["filename"], "r", locking=False) as h5:
            group = h5[f"{scan['scan_nb']}.1/sample"]
            assert as_text(group["state"][()]) == tag["state"]
            assert as_text(h5[f"{scan['scan_nb']}.1/writer/status"][()]) == "SUCCEEDED"
            if "barcode" in tag:
                assert as_text(group["barcode"][()]) == tag["barcode"]

    # the service's API, with a read-only token made here
    service_cli = str(DEFAULT_VENV / "bin" / "sampletrack-service")
    token = subprocess.run(
        [service_cli, "token", "create", "--db", f"sqlite:///{workdir / 'service.db'}", "--read-only"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    answer = requests.get(
        f"http://127.0.0.1:{8090 + offset}/api/v1/events",
        params={"beamline": "id00", "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    stored = answer.json()["events"]
    assert [e["event_id"] for e in stored] == [e["event_id"] for e in summary["service_events"]]
    assert [(e["type"], e["status"]) for e in stored].count(("mounted", "ERROR")) == 1
    assert stored[-1]["type"] == "unmounted" and stored[-1]["sample"]["barcode"] == "THA-0003"
    # every mount the scans were tagged with is in the service
    assert {s["redis"]["mount_event_id"] for s in scans[:7]} <= {e["event_id"] for e in stored}
    check_timeline_page(workdir / "service.db", token, stored, tmp_path)


def _table_rows(printed: str) -> dict[str, list[tuple[str, str]]]:
    """The rows of the inventory table the demo printed: finding -> [(positions, barcode)]."""
    head = printed.index("inventory of changer 'sc' (tracker 'tracker')")
    rows: dict[str, list[tuple[str, str]]] = {}
    row = re.compile(r"^\[demo\]\s+(\d+:\d+(?:, \d+:\d+)*)\s+([a-z_]+)\s+(\S+)\s")
    for line in printed[head:].splitlines()[1:]:
        if not line.startswith("[demo]  "):
            break  # the table ends with the next step's line (or the summary)
        match = row.match(line)
        if match:
            rows.setdefault(match[2], []).append((match[1], match[3]))
    return rows


def test_demo_inventory_finds_what_the_sequence_did_to_the_pucks(demo: DemoRun) -> None:
    """The sequence's last step: the pin of 1:02 (LYS-0002) taken out of its puck by hand, the pin
    of 2:05 (UNK-0042) relabelled LYS-0001 (the label of the pin at 1:01), then ``sc.inventory()``.
    The ground truth is the demo beamline's configuration (changer.yml: pins at 1:01, 1:02, 2:01,
    2:05, 3:07 with no barcode, 3:16 dropped in step 5; samples.csv declares 1:01, 1:02, 2:01) and
    what the sequence did: checked in the table it printed and in the inventory kept in Redis."""
    assert not demo.stopped, "run this module's tests in file order: the last one stops the demo"
    expected = {
        "missing": [("1:02", "LYS-0002")],  # taken out: declared there, read nowhere
        "duplicated": [("1:01, 2:05", "LYS-0001")],  # the copied label: read at both positions
        "no_read": [("3:07", "-")],  # the pin with no barcode at all
        "present": [("2:01", "THA-0003")],  # the one declared pin nobody touched
    }
    printed = demo.output.read_text()
    assert "8. a puck inventory" in printed
    assert "inventory [##############################] 48/48 pins" in printed  # 3 pucks of 16
    assert _table_rows(printed) == expected, printed[printed.index("8. a puck inventory") :]

    # the inventory kept in Redis (beacon's), read here with a plain client
    import redis

    client = redis.Redis(port=demo.ports[1])
    kept = client.lrange("sampletrack:tracker:inventory:sc", 0, -1)
    assert len(kept) == 1  # the sequence takes one inventory
    record = json.loads(kept[0])
    assert record["changer"] == "sc" and record["reader"] == "bcr"
    assert len(record["reads"]) == 48 and {str(p) for p in range(1, 4)} == set(record["containers"])
    found = {
        kind: [
            (", ".join(f["addresses"]), f["barcode"] or "-") for f in record["findings"] if f["kind"] == kind
        ]
        for kind in {f["kind"] for f in record["findings"]}
    }
    assert found == expected, record["findings"]
    empty = {r["address"] for r in record["reads"] if not r["pin"]}
    assert "1:02" in empty and "3:16" in empty and not {"1:01", "2:01", "2:05", "3:07"} & empty
    assert {r["address"]: r["code"] for r in record["reads"] if r["code"]} == {
        "1:01": "LYS-0001",
        "2:01": "THA-0003",
        "2:05": "LYS-0001",
    }

    # the summary's check agrees, and says so
    summary = json.loads(demo.summary_file.read_text())["inventory"]
    assert summary["agree"] is True and summary["kept_in_redis"] is True
    assert summary["removed"] == {"1:02": "LYS-0002"} and summary["relabelled"] == {"2:05": "LYS-0001"}
    assert summary["found"]["missing"] == [[["1:02"], "LYS-0002"]]
    assert summary["found"]["duplicated"] == [[["1:01", "2:05"], "LYS-0001"]]
    assert "The puck inventory (kept in Redis) against what the sequence did" in printed


def demo_secrets(demo: DemoRun) -> dict[str, str]:
    tokens = demo.tokens()
    assert set(tokens) == {"SAMPLETRACK_TOKEN", "SAMPLETRACK_READ_TOKEN"}
    return {
        **secret_forms("the tracker's token", tokens["SAMPLETRACK_TOKEN"]),
        **secret_forms("the page's read-only token", tokens["SAMPLETRACK_READ_TOKEN"]),
    }


def started_processes(demo: DemoRun) -> dict[int, str]:
    """pid -> command line of every process the demo started: its descendants (zombies too)."""
    return descendants(demo.process.pid, living_only=False)


def test_demo_secrets_are_nowhere_while_it_runs(demo: DemoRun) -> None:
    assert not demo.stopped, "run this module's tests in file order: the last one stops the demo"
    tokens_file = demo.workdir / "tokens.env"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    secrets = demo_secrets(demo)
    tokens = demo.tokens()
    # both are the service's live tokens
    for name in ("SAMPLETRACK_TOKEN", "SAMPLETRACK_READ_TOKEN"):
        answer = requests.get(
            f"http://127.0.0.1:{demo.ports[3]}/api/v1/events",
            params={"beamline": "id00", "limit": 1},
            headers={"Authorization": f"Bearer {tokens[name]}"},
            timeout=10,
        )
        assert answer.status_code == 200, (name, answer.text)

    # every key and value of beacon's two Redis databases (settings and outbox; scan data)
    hits = []
    keys: dict[int, set[str]] = {}
    for port in demo.ports[1:3]:
        redis_hit, keys[port] = redis_hits(secrets, f"redis://127.0.0.1:{port}")
        hits += redis_hit
    # the environment of every process it started: beacon, its Redis, the service
    processes = started_processes(demo)
    for pid, cmdline in processes.items():
        try:
            hits += text_hits(
                secrets, f"the environment of {cmdline[:80]}", Path(f"/proc/{pid}/environ").read_bytes()
            )
        except OSError:
            continue
    # the tracker's state and delivery, as `sampletrack status` shows them from beacon
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLETRACK")}
    status = subprocess.run(
        [str(DEFAULT_VENV / "bin" / "sampletrack"), "status", "--beacon", f"localhost:{demo.ports[0]}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SAMPLETRACK_TOKEN": tokens["SAMPLETRACK_TOKEN"]},
        check=False,
    )
    hits += text_hits(secrets, "sampletrack status", status.stdout + status.stderr)
    assert hits == [], "\n".join(hits)

    # the search looked where it meant to
    assert status.returncode == 0, status.stderr[-2000:]
    assert "tracker 'tracker': EMPTY" in status.stdout and "service: REST" in status.stdout
    assert "sampletrack:outbox:id00" in keys[demo.ports[1]]
    assert any("scan" in key for key in keys[demo.ports[2]])
    names = " ".join(processes.values())
    assert "beacon-server" in names and "redis-server" in names and "sampletrack-service" in names


def test_demo_stops_everything_and_leaves_no_secret_behind(demo: DemoRun) -> None:
    secrets = demo_secrets(demo)
    demo.stop()
    output = demo.output.read_text()
    # everything it started is stopped: nothing listens on its ports any more
    assert not any(_listening(p) for p in demo.ports)
    assert "stopping the tracking service, beacon and Redis" in output
    assert os.path.exists(demo.workdir / "service.log")
    # what it printed says where the tokens are, never what they are
    assert f"{demo.workdir / 'tokens.env'}" in output
    hits = text_hits(secrets, "the demo's output", output)
    hits += text_hits(secrets, "the summary", demo.summary_file.read_bytes())
    # every file it left: logs, configuration, the service's database, the HDF5 files (h5py too)
    file_hit, count = file_hits(secrets, demo.workdir, skip=[demo.workdir / "tokens.env"])
    hits += file_hit
    assert hits == [], "\n".join(hits)
    for name in ("service.db", "service.log", "beacon/beacon.log", "config/sampletrack/tracker.yml"):
        assert (demo.workdir / name).is_file(), name
    assert list(demo.workdir.rglob("*.h5")) and count > 20
