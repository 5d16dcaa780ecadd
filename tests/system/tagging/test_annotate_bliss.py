"""``sampletrack annotate`` on a real BLISS scan's file, in the test bed's session: written while
the session is open, verified through beacon's Redis, refused while a scan holds the file (the
file-only cases are in tests/unit/tagging/test_annotate.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import h5py
import pytest

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.tagging.annotate import Action, annotate_file
from bliss_sampletrack.tagging.annotate_cli import main
from bliss_sampletrack.testing import as_text

WHERE: dict[str, Any] = {"beamline": "id00", "session": "demo_session", "source": Source.BARCODE_READER}
LYSO = Sample(barcode="LYS-0001", name="lysozyme_1", container_name="puck3")


def _annotate_in_subprocess(path: str, events_json: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from bliss_sampletrack.tagging.annotate_cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, path, "--events", str(events_json)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.bliss
def test_annotate_a_real_bliss_scan(
    beacon: Any, bliss_session: Any, scan_saving: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gevent
    from bliss.common.scans import loopscan
    from bliss.config.conductor.client import get_redis_proxy

    diode = bliss_session.env_dict["diode"]
    scan = loopscan(2, 0.01, diode)  # saved, no tracker active
    filename, number = scan.scan_info["filename"], scan.scan_info["scan_nb"]
    with h5py.File(filename, "r", locking=False) as h5:
        assert "sample" not in h5[f"{number}.1"], "a tracker is active: this test needs none"
        start = datetime.fromisoformat(as_text(h5[f"{number}.1/start_time"][()]))
    mounted = Event.mounted(LYSO, occurred_at=start - timedelta(minutes=1), **WHERE)

    # the session is open but no scan is running: BLISS's writer has closed the file
    (result,) = annotate_file(filename, [mounted], "tracker", [number])
    assert result.action is Action.WRITTEN, result
    with h5py.File(filename, "r", locking=False) as h5:
        group = h5[f"{number}.1/sample"]
        assert as_text(group.attrs["NX_class"]) == "NXsample" and as_text(group.attrs["tracker"]) == "tracker"
        values = {key: as_text(group[key][()]) for key in group}
    assert (values["state"], values["name"], values["barcode"]) == ("MOUNTED", "lysozyme_1", "LYS-0001")
    assert values["mount_event_id"] == str(mounted.event_id)
    assert values["annotated"].startswith("by sampletrack annotate at ")

    # the writer goes on appending scans to the annotated file
    after = loopscan(2, 0.01, diode)
    assert after.scan_info["filename"] == filename
    with h5py.File(filename, "r", locking=False) as h5:
        assert f"{after.scan_info['scan_nb']}.1/measurement" in h5

    # verify through the beacon's Redis, as `sampletrack annotate --beacon` does
    redis, key = get_redis_proxy(), "sampletrack:annotate_test:history"
    redis.delete(key)
    redis.lpush(key, mounted.to_json())
    try:
        argv = [filename, "--verify", "--scan", str(number), "--beacon", beacon.host]
        assert main([*argv, "--tracker", "annotate_test"]) == 0
    finally:
        redis.delete(key)
    out = capsys.readouterr().out
    assert f"{number}.1" in out and "verified" in out

    # while a scan runs, the writer holds the file: another process is refused, nothing is written
    events_json = tmp_path / "events.json"
    events_json.write_text(json.dumps([mounted.to_dict()]))
    running = gevent.spawn(loopscan, 200, 0.02, diode)
    try:
        gevent.sleep(1.0)
        assert not running.ready(), "the scan ended too early for this check"
        refused = _annotate_in_subprocess(filename, events_json)
    finally:
        running.get(timeout=60)
    assert refused.returncode == 2, refused
    assert "is open in another program" in refused.stderr and filename in refused.stderr
    # after the scan, the same command annotates the scans that have no tag
    done = _annotate_in_subprocess(filename, events_json)
    assert done.returncode == 0, done
    assert "kept" in done.stdout and "written" in done.stdout
