"""The web page in headless Chromium: the timeline, the legend, failed and doubtful visits, the
sample search (barcode or name), a sample's page, live refresh, time zones and the token messages.

The page runs against a real service process (``tests/helpers/web_page.py``: ``service_fixtures.py
ui-harness``, the service's app plus a ``/harness`` page that puts the token in the origin's
sessionStorage, as a user typing it would, then opens the page; the token never appears in a URL).
Two ways to drive Chromium:
- ``--dump-dom`` with a virtual time budget: the DOM the page built once its loads are done;
- :class:`web_page.Browser`, the DevTools protocol over a pipe, in real time: typing a search,
  waiting for a live refresh, computed styles.
The browser's time zone is Europe/Paris (TZ) unless said otherwise: the page shows local time with
the zone's name (01:00Z is "02:00:00 CET"). A screenshot of the timeline is kept as an artefact
(copied to ``$SAMPLETRACK_TEST_ARTIFACTS`` when set). Chromium is installed by
``tools/setup-system.sh`` when missing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from service_fixtures import REPO, Service, issue_token, make_event, stamp
from web_page import Browser, Dom, harness, harness_url, run_chromium

from bliss_sampletrack.service.events import prepare_event
from bliss_sampletrack.service.storage import open_storage

pytest_plugins = ["service_fixtures"]

DAY = "2026-11-24"
PARIS = "Europe/Paris"
VIEW = f"/api/v1/ui/?beamline=id23-1&since={DAY}T00:00:00Z&until={DAY}T10:00:00Z"
LYSO = {"barcode": "BC-LYSO-1", "name": "lysozyme-A"}
THAU = {"barcode": "BC-THAU-2", "name": "thaumatin-B"}
FERR = {"barcode": "BC-FERR-4", "name": "ferritin-D"}
INSU = {"barcode": "BC-INSU-3", "name": "insulin-C-with-a-name-far-too-long-for-its-bar-in-the-timeline"}
NAMELESS = {
    "barcode": None,
    "name": "crystal-without-code",
    "container_name": None,
    "container_position": None,
}
FAILED_LOAD = "load of 4:02 by changer 'flex' failed: dropped_pin (presence sensor: no pin)"


def local(minutes: float) -> str:
    """The page's text for ``stamp(minutes)`` in Paris (UTC+1 in November)."""
    moment = datetime.fromisoformat(stamp(minutes, DAY).replace("Z", "+00:00")) + timedelta(hours=1)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " CET"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["bash", str(REPO / "tools" / "setup-system.sh")], check=False, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("Chromium is not installed and tools/setup-system.sh could not install it")
    return path


def seed(db_url: str, events: list[dict[str, Any]]) -> None:
    with open_storage(db_url) as store:
        store.migrate()
        store.insert_events([prepare_event(e) for e in events])


def short_visits(beamline: str, visits: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """A mount at each minute given, its unmount the given seconds later."""
    events = []
    for number, (minute, seconds) in enumerate(visits, 1):
        sample = {"barcode": f"SHORT-{number}", "name": f"brief-{number}"}
        mount = make_event(beamline=beamline, occurred_at=stamp(minute, DAY), sample=sample)
        events += [
            mount,
            make_event(
                beamline=beamline,
                type="unmounted",
                occurred_at=stamp(minute + seconds / 60, DAY),
                sample=sample,
                mount_event_id=mount["event_id"],
            ),
        ]
    return events


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """id23-1: a visit, a doubtful visit (unmount not observed), a failed load, a sample still
    mounted (by hand); id30: the first sample again, and another one; bm07: a sample with a name
    and no barcode; bm29: two short visits (40 s, 3 min 20 s)."""
    folder = tmp_path_factory.mktemp("web")
    db_url = f"sqlite:///{folder / 'web.db'}"
    token = issue_token(db_url, [], read_only=True)
    lyso = make_event(occurred_at=stamp(60, DAY), sample=LYSO)
    thau = make_event(occurred_at=stamp(200, DAY), sample=THAU, source="barcode_reader", sample_changer=None)
    ferr = make_event(
        occurred_at=stamp(450, DAY),
        sample=FERR,
        sample_changer={"name": "flex", "position": "4:02"},
        status="ERROR",
        message=FAILED_LOAD,
    )
    insu = make_event(occurred_at=stamp(480, DAY), sample=INSU, source="manual", sample_changer=None)
    nameless = make_event(beamline="bm07", occurred_at=stamp(300, DAY), sample=NAMELESS, sample_changer=None)
    seed(
        db_url,
        [
            lyso,
            make_event(
                type="unmounted", occurred_at=stamp(150, DAY), sample=LYSO, mount_event_id=lyso["event_id"]
            ),
            thau,
            make_event(
                type="unmounted",
                occurred_at=stamp(420, DAY),
                sample=THAU,
                mount_event_id=thau["event_id"],
                status="ERROR",
                message="unmount not observed",
            ),
            ferr,
            make_event(
                type="unmounted",
                occurred_at=stamp(465, DAY),
                sample=FERR,
                mount_event_id=ferr["event_id"],
                status="ERROR",
                message="unmount not observed: the tracker was CONFLICT",
            ),
            insu,
            make_event(beamline="id30", occurred_at=stamp(600, DAY), sample=LYSO, session="id30_session"),
            # another beamline's mount in the time range: not on id23-1's timeline
            make_event(
                beamline="id30",
                occurred_at=stamp(100, DAY),
                sample={"barcode": "BC-OTHER", "name": "other-E"},
            ),
            nameless,
            make_event(
                type="unmounted",
                beamline="bm07",
                occurred_at=stamp(310, DAY),
                sample=NAMELESS,
                sample_changer=None,
                mount_event_id=nameless["event_id"],
            ),
            *short_visits("bm29", [(60, 40), (62, 200)]),
        ],
    )
    return db_url, token


@pytest.fixture(scope="module")
def page(seeded: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = harness(*seeded, tmp_path_factory.mktemp("harness"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    with Browser(chromium, tmp_path, tz=PARIS) as driven:
        yield driven
        assert driven.errors == []  # no uncaught exception, no console error


# --- what a DOM dump shows -------------------------------------------------------------------------
def test_timeline_shows_visits_with_source_position_status_in_local_time(
    chromium: str, page: Service, seeded: tuple[str, str], tmp_path: Path
) -> None:
    result = run_chromium(chromium, harness_url(page, VIEW), tmp_path, "--dump-dom", tz=PARIS)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    assert dom.body_state == "ready", result.stdout[:3000]
    assert seeded[1] not in result.stdout  # the token is not in the page
    assert "beamline-view" not in dom.hidden and "sample-view" in dom.hidden

    assert dom.texts["timeline-status"] == "7 events, 4 mounts (1 failed, 1 doubtful)"
    assert dom.texts["auth-message"] == "Token accepted (kept in this tab only)."
    assert dom.texts["mounted-now"].startswith(
        f"Mounted now on id23-1: {INSU['name']} (BC-INSU-3) since {local(480)}"
    )
    assert [(classes.split()[1:], text) for classes, text in dom.bars] == [
        (["visit"], "lysozyme-A (BC-LYSO-1)"),
        (["doubtful"], "thaumatin-B (BC-THAU-2)"),
        (["failed"], "\u2715 ferritin-D (BC-FERR-4)"),
        (["open"], f"{INSU['name']} (BC-INSU-3)"),
    ]
    # sample, barcode, mounted, unmounted, duration, source, changer position, status, note
    assert dom.rows["intervals"] == [
        [
            "lysozyme-A",
            "BC-LYSO-1",
            local(60),
            local(150),
            "1 h 30 min",
            "sample changer",
            "flex 3:05",
            "SUCCESS",
            "",
        ],
        [
            "thaumatin-B",
            "BC-THAU-2",
            local(200),
            local(420),
            "3 h 40 min",
            "barcode reader / sample changer",
            "",
            "ERROR (doubtful)",
            "unmount: unmount not observed",
        ],
        [
            "ferritin-D",
            "BC-FERR-4",
            local(450),
            local(465),
            "15 min",
            "sample changer",
            "flex 4:02",
            "ERROR (failed)",
            f"mount: {FAILED_LOAD}; unmount: unmount not observed: the tracker was CONFLICT",
        ],
        [INSU["name"], "BC-INSU-3", local(480)]
        + dom.rows["intervals"][3][3:5]
        + ["manual", "", "SUCCESS", ""],
    ]
    assert dom.rows["intervals"][3][3] == "still mounted" and dom.rows["intervals"][3][4].endswith(" so far")
    assert "BC-OTHER" not in result.stdout and "crystal" not in result.stdout
    # the legend: every kind a bar can have, what it means
    assert [kind for kind, _ in dom.legend["legend"]] == ["visit", "open", "doubtful", "failed", ""]
    assert dom.legend["legend"][3][1].startswith("\u2715failed load")
    assert dom.legend["legend"][1][1] == "still mounted"


def test_durations_in_seconds_minutes_and_hours(chromium: str, page: Service, tmp_path: Path) -> None:
    """A mount of 40 s reads "40 s" (not "0 min"), one of 3 min 20 s reads so."""
    view = f"/api/v1/ui/?beamline=bm29&since={DAY}T00:00:00Z&until={DAY}T02:00:00Z"
    dom = Dom(run_chromium(chromium, harness_url(page, view), tmp_path, "--dump-dom", tz=PARIS).stdout)
    assert [row[4] for row in dom.rows["intervals"]] == ["40 s", "3 min 20 s"]


def test_times_in_utc_when_asked(chromium: str, page: Service, tmp_path: Path) -> None:
    dom = Dom(
        run_chromium(chromium, harness_url(page, VIEW + "&tz=UTC"), tmp_path, "--dump-dom", tz=PARIS).stdout
    )
    assert dom.rows["intervals"][0][2:4] == [f"{DAY} 01:00:00 UTC", f"{DAY} 02:30:00 UTC"]


def test_screenshot(chromium: str, page: Service, tmp_path: Path) -> None:
    shot = tmp_path / "sampletrack-ui.png"
    result = run_chromium(
        chromium,
        harness_url(page, VIEW),
        tmp_path,
        "--window-size=1280,1100",
        f"--screenshot={shot}",
        tz=PARIS,
    )
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


# --- the token: one clear message per case -------------------------------------------------------
def error_texts(dom: Dom) -> list[str]:
    return [text for key, text in dom.texts.items() if text and key.endswith(("status", "message"))]


def test_without_a_token_the_page_asks_for_one(chromium: str, page: Service, tmp_path: Path) -> None:
    result = run_chromium(chromium, page.base_url + "/ui/?beamline=id23-1", tmp_path, "--dump-dom", tz=PARIS)
    dom = Dom(result.stdout)
    assert dom.body_state == "ready"
    assert error_texts(dom) == [
        "Paste a read token above to see the data (an administrator makes one with: "
        "sampletrack-service token create --read-only)."
    ]
    assert 'class="status prompt"' in result.stdout and "status error" not in result.stdout
    assert {"beamline-view", "sample-view", "search-view", "home-view"} <= dom.hidden


def test_a_bad_token_gives_one_message(chromium: str, seeded: tuple[str, str], tmp_path: Path) -> None:
    service = harness(seeded[0], "stk_0123456789_" + "x" * 43, tmp_path)
    try:
        result = run_chromium(chromium, harness_url(service, VIEW), tmp_path, "--dump-dom", tz=PARIS)
    finally:
        service.stop()
    dom = Dom(result.stdout)
    assert dom.body_state == "ready"
    assert error_texts(dom) == [
        "The service refused this token: it is unknown or revoked. Paste another read token."
    ]
    assert result.stdout.count("status error") == 1
    assert "accepted" not in result.stdout and "token set" not in result.stdout
    assert dom.bars == [] and dom.rows.get("intervals") is None and "beamline-view" in dom.hidden


def test_a_token_of_another_beamline_gives_one_message(
    chromium: str, seeded: tuple[str, str], tmp_path: Path
) -> None:
    reader = issue_token(seeded[0], ["id30"], read_only=True)
    service = harness(seeded[0], reader, tmp_path)
    try:
        result = run_chromium(chromium, harness_url(service, VIEW), tmp_path, "--dump-dom", tz=PARIS)
    finally:
        service.stop()
    dom = Dom(result.stdout)
    token_id = reader.split("_")[1]
    assert error_texts(dom) == [
        f"Not allowed: this token may not read beamline 'id23-1' (token {token_id}: read only: id30)"
    ]
    assert dom.bars == []


# --- driven: legend, failed style, search, sample page, live refresh ------------------------------
def test_legend_and_the_failed_events_style(browser: Browser, page: Service) -> None:
    browser.open(harness_url(page, VIEW))
    legend = browser.evaluate(
        "[...document.querySelectorAll('#legend li')].map(li => [li.dataset.kind || '', li.textContent])"
    )
    assert [kind for kind, _ in legend] == ["visit", "open", "doubtful", "failed", ""]
    styles = browser.evaluate(
        """(() => {
          const look = (e) => { const s = getComputedStyle(e);
            return {background: s.backgroundColor + " " + s.backgroundImage, border: s.borderTopColor,
                    width: s.borderTopWidth, color: s.color}; };
          const out = {};
          for (const bar of document.querySelectorAll('#timeline .bar')) {
            out['bar ' + bar.dataset.kind] = look(bar);
            out['title ' + bar.dataset.kind] = bar.title;
            out['cut ' + bar.dataset.kind] = bar.scrollWidth > bar.clientWidth;
          }
          for (const swatch of document.querySelectorAll('#legend .swatch')) {
            out['swatch ' + swatch.className.split(' ')[1]] = look(swatch);
          }
          return out;
        })()"""
    )
    # a failed load is red stripes with a red border, not a visit's plain bar; the legend matches
    failed = styles["bar failed"]
    assert "repeating-linear-gradient" in failed["background"]
    assert failed["border"] == "rgb(180, 35, 24)" and failed["width"] == "2px"
    assert failed == styles["swatch failed"]
    assert (
        styles["bar visit"]["background"] == "rgb(47, 111, 214) none" == styles["swatch visit"]["background"]
    )
    assert "repeating-linear-gradient" in styles["bar doubtful"]["background"]
    assert styles["bar doubtful"] == styles["swatch doubtful"] and styles["bar doubtful"] != failed
    assert styles["bar open"]["background"] != styles["bar visit"]["background"]
    # hovering shows the full name, the times with the zone, how and how sure
    assert styles["title failed"].splitlines() == [
        "ferritin-D (BC-FERR-4) on id23-1",
        f"mounted {local(450)} by sample changer (flex 4:02)",
        f"unmounted {local(465)} by sample changer (flex 3:05)",
        "15 min \u00b7 ERROR (failed)",
        f"mount: {FAILED_LOAD}",
        "unmount: unmount not observed: the tracker was CONFLICT",
    ]
    assert styles["cut open"] is True  # the long name does not fit in its bar ...
    assert styles["title open"].startswith(f"{INSU['name']} (BC-INSU-3) on id23-1\n")  # ... its title has it
    # ... and it is written in full under the track, as are the other cut names
    labels = browser.evaluate(
        "[...document.querySelectorAll('#timeline .bar-label')].map(e => e.textContent)"
    )
    assert f"{INSU['name']} (BC-INSU-3)" in labels and "\u2715 ferritin-D (BC-FERR-4)" in labels
    zone_note = browser.evaluate("document.getElementById('tz-note').textContent")
    assert zone_note.startswith("Europe/Paris, UTC+01:00")


def test_search_by_name_opens_the_sample_page(browser: Browser, page: Service) -> None:
    browser.open(harness_url(page, "/api/v1/ui/?beamline=id23-1&range=7d"))
    browser.evaluate("window.sampletrackMarker = 'loaded once'")
    loads = browser.navigations()

    # a part of a name, in another case: the one sample that matches opens
    browser.type_text("#query", "LYSOZ")
    browser.press_enter()
    browser.wait_for(
        "document.getElementById('sample-title').textContent === 'Sample lysozyme-A (BC-LYSO-1)'"
    )
    browser.wait_for("document.body.dataset.state === 'ready'")
    sample = browser.evaluate(
        """(() => {
          const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')]
            .map(tr => [...tr.cells].map(td => td.textContent));
          return {url: location.search, visits: rows('visits'), history: rows('history'),
                  lanes: [...document.querySelectorAll('#sample-timeline .lane:not(.axis-row) .lane-title')]
                    .map(e => e.textContent),
                  now: document.getElementById('sample-now').textContent,
                  view: document.getElementById('sample-view').hidden,
                  marker: window.sampletrackMarker};
        })()"""
    )
    assert sample["url"] == "?sample=BC-LYSO-1" and sample["view"] is False
    assert sample["marker"] == "loaded once" and browser.navigations() == loads  # no reload
    assert sample["lanes"] == ["id23-1", "id30"]  # its whole history, across beamlines
    assert [row[:4] for row in sample["visits"]] == [
        ["id23-1", local(60), local(150), "1 h 30 min"],
        ["id30", local(600), "still mounted", sample["visits"][1][3]],
    ]
    assert [row[:7] for row in sample["history"]] == [
        [local(60), "id23-1", "mounted", "SUCCESS", "sample changer", "flex 3:05", "Puck 7 / 5"],
        [local(150), "id23-1", "unmounted", "SUCCESS", "sample changer", "flex 3:05", "Puck 7 / 5"],
        [local(600), "id30", "mounted", "SUCCESS", "sample changer", "flex 3:05", "Puck 7 / 5"],
    ]
    assert sample["now"].startswith(f"Mounted on id30 since {local(600)}")

    # a sample known by name only: its page is found by name
    browser.type_text("#query", "crystal")
    browser.press_enter()
    browser.wait_for("document.getElementById('sample-title').textContent === 'Sample crystal-without-code'")
    assert browser.evaluate("location.search") == "?name=crystal-without-code"
    browser.wait_for("document.querySelectorAll('#history tbody tr').length === 2")

    # several matches: a list to choose from, each a link to its page
    browser.type_text("#query", "bc-")
    browser.press_enter()
    browser.wait_for(
        "!document.getElementById('search-view').hidden && document.body.dataset.state === 'ready'"
    )
    results = browser.evaluate(
        "[...document.querySelectorAll('#search-results tbody tr')].map(tr => tr.cells[1].textContent)"
    )
    assert sorted(results) == ["BC-FERR-4", "BC-INSU-3", "BC-LYSO-1", "BC-OTHER", "BC-THAU-2"]
    status = browser.evaluate("document.getElementById('search-status').textContent")
    assert status.startswith("5 samples match \u201cbc-\u201d by barcode or name (searched all ")
    browser.click("#search-results tbody tr:first-child a")
    browser.wait_for("new URLSearchParams(location.search).get('sample') !== null")

    # an exact barcode goes straight to its page; Back returns to the previous view
    browser.type_text("#query", "BC-THAU-2")
    browser.press_enter()
    browser.wait_for(
        "document.getElementById('sample-title').textContent === 'Sample thaumatin-B (BC-THAU-2)'"
    )
    browser.evaluate("history.back()")
    browser.wait_for(
        "!document.getElementById('sample-view').hidden && location.search !== '?sample=BC-THAU-2'"
    )
    assert browser.evaluate("window.sampletrackMarker") == "loaded once" and browser.navigations() == loads


def now_stamp(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_live_refresh_shows_new_events_without_reload(chromium: str, tmp_path: Path) -> None:
    """The page open on a beamline (default window: fit the data), an event stored through the API:
    it appears within the refresh period, and the page was not reloaded (a marker set in ``window``
    at load survives, the main frame did not navigate)."""
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    reader = issue_token(db_url, [], read_only=True)
    writer = issue_token(db_url, ["id14"])
    first = make_event(beamline="id14", occurred_at=now_stamp(-600), sample=LYSO)
    seed(db_url, [first])
    service = harness(db_url, reader, tmp_path)
    try:
        with Browser(chromium, tmp_path, tz=PARIS) as browser:
            browser.open(harness_url(service, "/api/v1/ui/?beamline=id14&refresh=1"))
            assert browser.evaluate(
                "[...document.querySelectorAll('#timeline .bar')].map(b => b.textContent)"
            ) == ["lysozyme-A (BC-LYSO-1)"]
            browser.evaluate("window.sampletrackMarker = 'loaded once'")
            loads = browser.navigations()
            for event in (
                make_event(
                    beamline="id14",
                    type="unmounted",
                    occurred_at=now_stamp(-60),
                    sample=LYSO,
                    mount_event_id=first["event_id"],
                ),
                make_event(beamline="id14", occurred_at=now_stamp(-30), sample=THAU),
            ):
                response = requests.post(
                    service.url("/events"),
                    json=event,
                    headers={"Authorization": f"Bearer {writer}"},
                    timeout=10,
                )
                assert response.status_code == 201, response.text
            browser.wait_for(
                "[...document.querySelectorAll('#timeline .bar')]"
                ".map(b => b.dataset.kind + ' ' + b.textContent).join('|')"
                " === 'visit lysozyme-A (BC-LYSO-1)|open thaumatin-B (BC-THAU-2)'",
                timeout=15,
            )
            after = browser.evaluate(
                "({marker: window.sampletrackMarker, refreshes: Number(document.body.dataset.refreshes),"
                " now: document.getElementById('mounted-now').textContent,"
                " live: document.getElementById('live-status').textContent})"
            )
            assert after["marker"] == "loaded once" and browser.navigations() == loads
            assert after["refreshes"] >= 1
            assert after["now"].startswith("Mounted now on id14: thaumatin-B (BC-THAU-2) since ")
            assert after["live"].startswith("updated ") and after["live"].endswith(", every 1 s")
            assert browser.errors == []
    finally:
        service.stop()


def test_a_service_that_stops_answering_is_said_once_and_the_data_stays(
    chromium: str, seeded: tuple[str, str], tmp_path: Path
) -> None:
    service = harness(*seeded, tmp_path)
    try:
        with Browser(chromium, tmp_path, tz=PARIS) as browser:
            browser.open(harness_url(service, VIEW + "&refresh=1"))
            service.stop()
            status = browser.wait_for(
                "document.getElementById('timeline-status').classList.contains('error')"
                " && document.getElementById('timeline-status').textContent"
            )
            assert status == (
                "the service does not answer (network error or service down); trying again every 1 s"
            )
            assert browser.evaluate("document.querySelectorAll('#timeline .bar').length") == 4
            assert browser.evaluate("document.getElementById('auth-message').textContent") == (
                "Token accepted (kept in this tab only)."
            )
    finally:
        service.stop()
