"""The web page in headless Chromium: the timeline and the sample search show the known data.

The page runs against a real service process (``tests/helpers/web_page.py``: ``service_fixtures.py
ui-harness``, the service's app plus a ``/harness`` page that puts the token in the origin's
sessionStorage, as a user typing it would, then opens the page; the token never appears in a URL).
Chromium runs the page's JavaScript (``--virtual-time-budget``) and ``--dump-dom`` gives the DOM it
built; a screenshot of the same view is kept as an artefact (copied to
``$SAMPLETRACK_TEST_ARTIFACTS`` when set). Chromium is installed by ``tools/setup-system.sh`` when missing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from service_fixtures import REPO, Service, issue_token, make_event, stamp
from web_page import Dom, harness, run_chromium

from bliss_sampletrack.service.events import prepare_event
from bliss_sampletrack.service.storage import open_storage

pytest_plugins = ["service_fixtures"]

DAY = "2026-11-24"
VIEW = f"/api/v1/ui/?beamline=id23-1&since={DAY}T00:00:00Z&until={DAY}T10:00:00Z&barcode=BC-LYSO-1"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["bash", str(REPO / "tools" / "setup-system.sh")], check=False, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("Chromium is not installed and tools/setup-system.sh could not install it")
    return path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A database with three mounts on id23-1 and a later visit of the first sample to id30."""
    folder = tmp_path_factory.mktemp("web")
    db_url = f"sqlite:///{folder / 'web.db'}"
    token = issue_token(db_url, [], read_only=True)
    lyso = make_event(occurred_at=stamp(60, DAY), sample={"barcode": "BC-LYSO-1", "name": "lysozyme-A"})
    thau = make_event(occurred_at=stamp(200, DAY), sample={"barcode": "BC-THAU-2", "name": "thaumatin-B"})
    insu = make_event(occurred_at=stamp(480, DAY), sample={"barcode": "BC-INSU-3", "name": "insulin-C"})
    events = [
        lyso,
        make_event(
            type="unmounted",
            occurred_at=stamp(150, DAY),
            sample=lyso["sample"],
            mount_event_id=lyso["event_id"],
        ),
        thau,
        make_event(
            type="unmounted",
            occurred_at=stamp(420, DAY),
            sample=thau["sample"],
            mount_event_id=thau["event_id"],
            status="ERROR",
            message="unmount not observed",
        ),
        insu,
        make_event(
            beamline="id30", occurred_at=stamp(600, DAY), sample=lyso["sample"], session="id30_session"
        ),
        # another beamline's mount in the time range: not on id23-1's timeline
        make_event(
            beamline="id30", occurred_at=stamp(100, DAY), sample={"barcode": "BC-OTHER", "name": "other-D"}
        ),
    ]
    with open_storage(db_url) as store:
        store.migrate()
        store.insert_events([prepare_event(e) for e in events])
    return db_url, token


@pytest.fixture(scope="module")
def page(seeded: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = harness(*seeded, tmp_path_factory.mktemp("harness"))
    try:
        yield service
    finally:
        service.stop()


def test_timeline_and_search_render_the_data(
    chromium: str, page: Service, seeded: tuple[str, str], tmp_path: Path
) -> None:
    url = page.base_url.rsplit("/api/v1", 1)[0] + "/harness?to=" + quote(VIEW, safe="")
    result = run_chromium(chromium, url, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    assert dom.body_state == "ready", result.stdout[:3000]
    assert seeded[1] not in result.stdout  # the token is not in the page

    # the timeline of id23-1: three mounts, the doubtful one marked, the last one still mounted
    assert dom.texts["timeline-status"] == "5 events, 3 mounts"
    assert dom.texts["mounted-now"].startswith(
        "Mounted now on id23-1: insulin-C (BC-INSU-3) since 2026-11-24 08:00"
    )
    assert [text for _, text in dom.bars] == [
        "lysozyme-A (BC-LYSO-1)",
        "thaumatin-B (BC-THAU-2)",
        "insulin-C (BC-INSU-3)",
    ]
    assert "doubtful" in dom.bars[1][0] and "open" in dom.bars[2][0]
    intervals = [row[:4] for row in dom.rows["intervals"]]
    assert intervals == [
        ["lysozyme-A", "BC-LYSO-1", f"{DAY} 01:00:00Z", f"{DAY} 02:30:00Z"],
        ["thaumatin-B", "BC-THAU-2", f"{DAY} 03:20:00Z", f"{DAY} 07:00:00Z"],
        ["insulin-C", "BC-INSU-3", f"{DAY} 08:00:00Z", "still mounted"],
    ]
    assert dom.rows["intervals"][1][5] == "ERROR: unmount not observed"

    # the search: the whole history of BC-LYSO-1, on both beamlines
    assert dom.texts["history-status"] == "3 events for BC-LYSO-1"
    assert [row[:4] for row in dom.rows["visits"]] == [
        ["id23-1", "lysozyme-A (BC-LYSO-1)", f"{DAY} 01:00:00Z", f"{DAY} 02:30:00Z"],
        ["id30", "lysozyme-A (BC-LYSO-1)", f"{DAY} 10:00:00Z", "still mounted"],
    ]
    assert [row[:4] for row in dom.rows["history"]] == [
        [f"{DAY} 01:00:00Z", "id23-1", "mounted", "SUCCESS"],
        [f"{DAY} 02:30:00Z", "id23-1", "unmounted", "SUCCESS"],
        [f"{DAY} 10:00:00Z", "id30", "mounted", "SUCCESS"],
    ]
    assert "BC-OTHER" not in result.stdout


def test_screenshot(chromium: str, page: Service, tmp_path: Path) -> None:
    url = page.base_url.rsplit("/api/v1", 1)[0] + "/harness?to=" + quote(VIEW, safe="")
    shot = tmp_path / "sampletrack-ui.png"
    result = run_chromium(chromium, url, tmp_path, "--window-size=1280,1100", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 1100)
    assert len(data) > 30_000  # tables, bars and text; a blank page is a few kB
    artifacts = os.environ.get("SAMPLETRACK_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)


def test_a_bad_token_is_reported_on_the_page(chromium: str, seeded: tuple[str, str], tmp_path: Path) -> None:
    service = harness(seeded[0], "stk_0123456789_" + "x" * 43, tmp_path)
    try:
        url = service.base_url.rsplit("/api/v1", 1)[0] + "/harness?to=" + quote(VIEW, safe="")
        result = run_chromium(chromium, url, tmp_path, "--dump-dom")
    finally:
        service.stop()
    dom = Dom(result.stdout)
    assert dom.body_state == "ready"
    assert dom.texts["timeline-status"] == "401 invalid or revoked token"
    assert dom.texts["history-status"] == "401 invalid or revoked token"
    assert 'class="status error"' in result.stdout
    assert dom.bars == [] and "intervals" not in dom.rows
