"""The README's first command, ``bash tools/demo.sh``, end to end: its summary must match what this
test reads independently from Redis (blissdata), the HDF5 files (h5py) and the service's API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
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

    from test_service_web import Dom, harness, run_chromium

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


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def test_demo_command_summary_matches_redis_hdf5_and_service(tmp_path: Path) -> None:
    workdir, summary_file, output = tmp_path / "demo", tmp_path / "summary.json", tmp_path / "demo.out"
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
        demo = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        import gevent

        with gevent.Timeout(400, AssertionError("the demo did not finish its sequence in time")):
            while not summary_file.exists():
                assert demo.poll() is None, output.read_text()[-3000:]
                gevent.sleep(0.5)
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
        assert (
            "no-read refused" in notes and "UNK-0042" in notes and "dropped" in notes and "pending" in notes
        )
        assert "Timeline page of the tracking service" in printed

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
                assert _text(group["state"][()]) == tag["state"]
                if "barcode" in tag:
                    assert _text(group["barcode"][()]) == tag["barcode"]

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
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    # everything it started is stopped: nothing listens on its ports any more
    assert not any(_listening(p) for p in (25000 + offset, 25001 + offset, 25002 + offset, 8090 + offset))
    assert "stopping the tracking service, beacon and Redis" in output.read_text()
    assert os.path.exists(workdir / "service.log")
