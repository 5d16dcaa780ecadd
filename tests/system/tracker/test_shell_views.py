"""The shell views in a real BLISS session: ``tracker.where(...)`` after a real mount / scan /
unmount sequence with the simulated changer and three delivery clients (one accepting, one
refusing with 422, one down), ``tracker.pucks()`` and the changer's ``__info__``, and the small
things (tab completion, argument errors, ``history(n)``, warnings that end, the reader's last
failure, ``refresh_registry()`` reloading the manifest).

What the views print is compared with the ground truth: the events in Redis (the store's history,
the outbox's dead letters), the scans BLISS returned, the simulated changer's contents."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from changer_fixtures import make_tracker

from bliss_sampletrack.changers.errors import MountFailedError
from bliss_sampletrack.changers.link import link_changer
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.core import Event, EventType
from bliss_sampletrack.errors import NoReadError, SampleTrackError
from bliss_sampletrack.testbed.beacon import BeaconServer, free_port
from bliss_sampletrack.testing import clear_tracker_keys, wait_for
from bliss_sampletrack.tracker.controller import SampleTracker

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]  # tracker, sc

PARIS = ZoneInfo("Europe/Paris")
TOKEN_ENV = "SAMPLETRACK_VIEWS_TOKEN"
REFUSAL = {
    "error": {
        "code": "invalid_event",
        "message": "the event is invalid",
        "fields": {"sample.barcode": "not a barcode of this facility"},
    }
}


def paris(event: Event) -> str:
    """The time the views must show (the test runs in Europe/Paris), computed here, not by them."""
    return event.occurred_at.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S %Z")


@pytest.fixture
def in_paris() -> Iterator[None]:
    """This process in Europe/Paris time (the views show local time with its zone)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


class Refusing:
    """A tracking service that refuses every event with 422 (one by one, and in batches)."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        path = environ["PATH_INFO"]
        if environ["REQUEST_METHOD"] == "GET":  # the deliverer's health probe
            status, answer = "200 OK", {"status": "ok"}
        elif path.endswith("/events/batch"):
            results = [
                {"event_id": e["event_id"], "status": 422, "error": REFUSAL["error"]}
                for e in json.loads(raw)["events"]
            ]
            status, answer = "200 OK", {"results": results}
        else:
            status, answer = "422 Unprocessable Entity", REFUSAL
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]


@pytest.fixture
def delivering(
    bliss_session: Any, scan_saving: Any, http_server: tuple[str, Any], in_paris: None
) -> Iterator[SampleTracker]:
    """The demo's tracker delivering to three clients: ``views_svc`` accepts, ``views_strict``
    refuses everything (422: dead letters), ``views_down`` has no server (events wait)."""
    from gevent.pywsgi import WSGIServer

    url, _ = http_server
    refusing = WSGIServer(("127.0.0.1", 0), Refusing(), log=None)
    refusing.start()
    os.environ[TOKEN_ENV] = "stk_views_test_token"
    clients = [
        ("views_svc", url),
        ("views_strict", f"http://127.0.0.1:{refusing.server_port}/api/v1"),
        ("views_down", f"http://127.0.0.1:{free_port()}/api/v1"),
    ]
    clear_tracker_keys()
    tracker = make_tracker(
        delivery=[
            {"name": n, "type": "rest", "url": u, "token_env": TOKEN_ENV, "timeout": 2} for n, u in clients
        ]
    )
    tracker.reader.remove()  # type: ignore[union-attr]
    try:
        yield tracker
    finally:
        tracker.close()
        refusing.stop()
        del os.environ[TOKEN_ENV]


def rows(text: str) -> list[list[str]]:
    """The table rows of a view (a line indented 2 or 4, optionally marked ``>``), as cells."""
    return [
        re.split(r"\s{2,}", line.strip().lstrip("> ").strip()) for line in text.splitlines() if is_row(line)
    ]


def is_row(line: str) -> bool:
    return re.match(r"^ {2,4}[ >] (\d{4}-\d\d-\d\d |\d:\d\d  )", line) is not None


def test_where_tells_one_samples_mounts_scans_and_deliveries(
    delivering: SampleTracker, sc: SimulatedChanger, bliss_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from bliss.common.scans import loopscan

    tracker, diode = delivering, bliss_session.env_dict["diode"]
    link = link_changer(tracker, sc, name="sc_link")
    try:
        sc.mount("1:01")
        first = [loopscan(2, 0.01, diode), loopscan(3, 0.01, diode)]
        sc.mount("1:02")  # unloads 1:01 first
        second = [loopscan(2, 0.01, diode)]
        outbox = tracker.outbox
        wait_for(
            lambda: outbox.pending("views_svc") == 0 and len(outbox.dead_letters("views_strict")) == 3,
            60,
            "views_svc to accept and views_strict to refuse the three events",
        )
        assert outbox.pending("views_down") == 3
        mount1, unmount1, mount2 = reversed(tracker.store.history(3))  # ground truth: Redis
        assert [e.type for e in (mount1, unmount1, mount2)] == [
            EventType.MOUNTED,
            EventType.UNMOUNTED,
            EventType.MOUNTED,
        ]
        refused = {str(d.event.event_id): d.answer for d in outbox.dead_letters("views_strict")}
        assert set(refused) == {str(e.event_id) for e in (mount1, unmount1, mount2)}

        tracker.where("LYS-0001")
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0] == "tracker 'tracker': the story of lysozyme_1 (LYS-0001)"
        assert "matched   : barcode 'LYS-0001', exactly, in the last 3 event(s) kept" in out
        assert "now       : not mounted" in out
        who = f"{mount1.session}@{mount1.producer.host}"
        assert rows(out) == [
            [paris(mount1), "mounted", "SUCCESS", "sample_changer", "sc 1:01", who],
            [paris(unmount1), "unmounted", "SUCCESS", "sample_changer", "sc 1:01", who],
        ]
        assert paris(mount1).endswith((" CET", " CEST"))
        # each row is followed by its deliveries, and the mount by the scans taken meanwhile
        mount_at, unmount_at = (
            next(i for i, line in enumerate(lines) if paris(e) in line and str(e.type) in line)
            for e in (mount1, unmount1)
        )
        under_mount = "\n".join(lines[mount_at + 1 : unmount_at])
        for event, block in ((mount1, under_mount), (unmount1, "\n".join(lines[unmount_at + 1 :]))):
            expected = (
                f"delivery: views_svc delivered; views_strict dead letter ({refused[str(event.event_id)]}); "
                "views_down waiting"
            )
            assert expected in block, block
            assert "422" in refused[str(event.event_id)] and "sample.barcode" in refused[str(event.event_id)]
        assert "scans while mounted (2):" in under_mount
        for scan in first:
            info = scan.scan_info
            assert f"#{info['scan_nb']}  {info['title']}  at " in under_mount
            assert f"file {info['filename']}" in under_mount
        assert f"#{second[0].scan_info['scan_nb']}  " not in under_mount  # that one was of LYS-0002

        tracker.where("lysozyme_2")  # by name; mounted now: its mount is marked
        out = capsys.readouterr().out
        assert "matched   : sample name 'lysozyme_2', exactly" in out
        assert f"now       : mounted since {paris(mount2)} (marked >)" in out
        marked = [line for line in out.splitlines() if line.startswith("  > ")]
        assert len(marked) == 1 and paris(mount2) in marked[0] and "sc 1:02" in marked[0]
        assert f"#{second[0].scan_info['scan_nb']}  {second[0].scan_info['title']}" in out
        assert "scans while mounted (1):" in out

        tracker.where("lys-0001")
        assert "barcode 'lys-0001', ignoring case" in capsys.readouterr().out
        tracker.where("BC-0042")
        out = capsys.readouterr().out
        assert out.startswith("tracker 'tracker': nothing recorded for 'BC-0042': no event in the last 3")
        assert "(compared exactly, then ignoring case)" in out
        assert "registry  : no registry knows barcode 'BC-0042' either" in out
        tracker.where("THA-0003")  # in the manifest, never mounted
        assert "barcode 'THA-0003' is thaumatin_3 (THA-0003) in the registries, never mounted" in (
            capsys.readouterr().out
        )
        with pytest.raises(ValueError, match="give a barcode or a sample name"):
            tracker.where(" ")
        assert not any("in no sample registry" in w for w in tracker.warnings)  # views look, never warn
    finally:
        link.close()


def test_pucks_and_the_changer_info_show_positions_names_and_the_mounted_pin(
    tracker: SampleTracker, sc: SimulatedChanger, in_paris: None, capsys: pytest.CaptureFixture[str]
) -> None:
    link = link_changer(tracker, sc, name="sc_link")
    try:
        sc.mount("1:01")
        sc.mount("1:02")
        tracker.pucks()
        out = capsys.readouterr().out
        contents = {p.address: p for p in sc.contents()}  # ground truth: the simulated changer
        for puck in (1, 2, 3):
            expected = "".join(
                ">"
                if contents.get(f"{puck}:{n:02d}") and contents[f"{puck}:{n:02d}"].on_goniometer
                else "#"
                if f"{puck}:{n:02d}" in contents
                else "."
                for n in range(1, 17)
            )
            count = sum(1 for a in contents if a.startswith(f"{puck}:"))
            assert f"    puck {puck:<3} {expected}  {count} pin(s)" in out, out
        unmount = next(e for e in tracker.store.history(10) if e.type is EventType.UNMOUNTED)
        mount = tracker.store.history(1)[0]
        by_address = {cells[0]: cells for cells in rows(out)}
        assert sorted(by_address) == sorted(contents)
        assert by_address["1:02"] == ["1:02", "mounted", "LYS-0002", "lysozyme_2", f"mounted {paris(mount)}"]
        assert by_address["1:01"] == [
            "1:01",
            "in the dewar",
            "LYS-0001",
            "lysozyme_1",
            f"unmounted {paris(unmount)}",
        ]
        assert by_address["2:05"][2:4] == ["UNK-0042", "(in no registry)"]
        assert by_address["3:07"][1:4] == ["in the dewar", "(no barcode)", "-"]
        marked = [line for line in out.splitlines() if line.startswith("    > ")]
        assert len(marked) == 1 and "1:02" in marked[0]
        assert "\x1b[" not in out  # captured output is no terminal: plain text
        assert "  tracker   : MOUNTED lysozyme_2 (LYS-0002) from sc 1:02" in out

        info = sc.__info__()  # the changer's own __info__ shows the tracker's view while linked
        assert info.startswith("SimulatedChanger 'sc' (3 pucks x 16)")
        assert any(line.startswith("    > 1:02  mounted") for line in info.splitlines()), info

        sc.fail_next("dropped_pin")
        with pytest.raises(MountFailedError):
            sc.mount("3:16")
        tracker.pucks(sc)
        out = capsys.readouterr().out
        failed = next(e for e in tracker.store.history(10) if e.sample.changer_position == "3:16")
        dropped = {cells[0]: cells for cells in rows(out)}["3:16"]
        assert dropped[1:3] == ["unknown", "UNK-0043"]
        assert dropped[-1].startswith(f"{failed.type} {paris(failed)} (ERROR); dropped by the robot")
        assert "3:16" not in {p.address for p in sc.contents()} and sc.lost[0][0] == "3:16"
    finally:
        link.close()
    assert "1:01  LYS-0001" in sc.__info__() and "> 1:0" not in sc.__info__()  # unlinked: its own listing
    tracker.pucks()
    assert "has no changer linked" in capsys.readouterr().out


def test_completion_offers_commands_and_argument_errors_name_the_argument(
    tracker: SampleTracker, sc: SimulatedChanger
) -> None:
    import jedi

    offered = {c.name for c in jedi.Interpreter("tracker.", [{"tracker": tracker}]).complete()}
    assert {"where", "pucks", "mount", "history", "refresh_registry"} <= offered
    assert not offered & {"record_mount", "changing", "add_witness", "scan_tag", "store", "listeners"}
    changer = {c.name for c in jedi.Interpreter("sc.", [{"sc": sc}]).complete()}
    assert {"mount", "fail_next", "contents"} <= changer and "subscribe" not in changer
    assert callable(tracker.record_mount)  # unlisted, still there for changers and macros

    with pytest.raises(TypeError) as wrong:
        tracker.mount(42)  # type: ignore[arg-type]
    message = str(wrong.value)
    assert message.startswith("tracker.mount(): argument 'barcode' must be str | None, got int 42")
    assert (
        "usage: tracker.mount(barcode: str | None = None, name: str | None = None, force: bool = False)"
        in message
    )
    assert "Intended Usage" not in message
    with pytest.raises(TypeError) as wrong_changer:  # the changers' commands say it the same way
        sc.mount(1)  # type: ignore[arg-type]
    assert str(wrong_changer.value).startswith("sc.mount(): argument 'target' must be str, got int 1")
    assert "usage: sc.mount(target: str, timeout: " in str(wrong_changer.value)
    with pytest.raises(TypeError, match=r"tracker\.history\(\): argument 'count' must be int, got str '5'"):
        tracker.history("5")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"missing a required argument: 'sample'\n  usage: tracker.where\(sample: str\)"
    ):
        tracker.where()  # type: ignore[call-arg]


def test_history_needs_a_count_of_at_least_one(
    tracker: SampleTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker.mount("LYS-0001")
    tracker.mount("THA-0003")
    for count in (0, -1):
        with pytest.raises(ValueError, match=r"must be a whole number >= 1 .* got " + str(count)):
            tracker.history(count)
    assert capsys.readouterr().out == ""
    tracker.history(2)
    lines = capsys.readouterr().out.splitlines()
    newest = tracker.store.history(2)
    assert len(lines) == 3 and "THA-0003" in lines[1] and "unmounted" in lines[2]
    assert lines[1].startswith(newest[0].occurred_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))


def warnings_in_info(tracker: SampleTracker) -> list[str]:
    return [line for line in tracker.__info__().splitlines() if line.startswith("  warning   : ")]


def test_a_warning_leaves_info_once_its_situation_is_over(tracker: SampleTracker) -> None:
    tracker.resolve("UNLISTED-9")  # a look-up records nothing: nothing to warn about in __info__
    assert "barcode 'UNLISTED-9' is in no sample registry" in tracker.warnings[-1]  # logged
    assert warnings_in_info(tracker) == []
    tracker.mount("UNLISTED-9")
    [standing] = warnings_in_info(tracker)
    assert "barcode 'UNLISTED-9' is in no sample registry" in standing and "recorded as is" in standing
    tracker.mount("LYS-0001")  # the unknown sample is gone from the goniometer
    assert tracker.sample is not None and tracker.sample.barcode == "LYS-0001"
    assert warnings_in_info(tracker) == []


def test_the_last_read_failure_stays_only_until_a_good_read(tracker: SampleTracker) -> None:
    reader = tracker.reader
    assert reader is not None
    with pytest.raises(NoReadError):
        tracker.read_barcode()  # nothing in front of the reader
    [line] = [line for line in tracker.__info__().splitlines() if line.startswith("  reader    : ")]
    assert "last read failed at" in line and "no-read" in line
    reader.present("LYS-0002")  # type: ignore[attr-defined]
    assert tracker.read_barcode().barcode == "LYS-0002"
    [line] = [line for line in tracker.__info__().splitlines() if line.startswith("  reader    : ")]
    assert line == "  reader    : bcr (triggered, connected)"
    assert (
        reader.last_error is not None
    )  # the reader keeps its last error ever; the tracker shows the current


def test_refresh_registry_reloads_the_manifest(
    tracker: SampleTracker, beacon: BeaconServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = beacon.db_path / "sampletrack" / "samples.csv"
    original = manifest.read_text()
    assert tracker.resolve("LYS-0009").name is None  # not in the manifest yet
    try:
        manifest.write_text(original.rstrip("\n") + "\nLYS-0009,lysozyme_9,100009,P-7,Dewar A,C-4,puck4,2\n")
        tracker.refresh_registry()
        assert capsys.readouterr().out == "manifest beacon:sampletrack/samples.csv (4 samples), was 3\n"
        assert tracker.resolve("LYS-0009").name == "lysozyme_9"
        manifest.write_text(original + "LYS-0001,again,,,,,,\n")  # an error: the barcode twice
        with pytest.raises(SampleTrackError, match=r"listed twice .*its previous 4 samples are kept"):
            tracker.refresh_registry()
        assert "(4 samples)" in capsys.readouterr().out
        assert tracker.resolve("LYS-0009").name == "lysozyme_9"
    finally:
        manifest.write_text(original)
    tracker.refresh_registry()
    assert "(3 samples), was 4" in capsys.readouterr().out


def test_each_tagged_scan_is_kept_under_its_mount_in_redis(
    tracker: SampleTracker, bliss_session: Any
) -> None:
    """The scan log (written in a greenlet of its own, outside the scan) has the scan BLISS ran."""
    from bliss.common.scans import loopscan

    tracker.mount("LYS-0001")
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    mount_id = str(tracker.snapshot.mount_event_id)
    tracker.scan_log.flush(5)
    raw = tracker.store.redis.lrange(f"sampletrack:tracker:scans:{mount_id}", 0, -1)
    assert [json.loads(r)["number"] for r in raw] == [scan.scan_info["scan_nb"]]
    assert json.loads(raw[0])["filename"] == scan.scan_info["filename"]


def test_a_generic_changer_without_contents_shows_its_positions_as_unknown(tracker: SampleTracker) -> None:
    from changer_fixtures import HypotheticalRobot, robot_changer

    robot = HypotheticalRobot()
    changer = robot_changer(robot, poll_period=0.05, presence_settle=0.1)
    link = link_changer(tracker, changer, name="robot_link")
    try:
        changer.mount("3:05")
        assert robot.loaded == "3:05"  # ground truth: the robot's own object
        info = changer.__info__()
        assert info.startswith("BlissObjectChanger 'robot_sc'")
        assert (
            "  positions : the changer lists no contents (no 'contents' in its YAML): positions unknown"
            in info
        )
        [mounted] = [line for line in info.splitlines() if line.startswith("    > ")]
        assert re.split(r"\s{2,}", mounted[6:])[:3] == ["3:05", "mounted", "(no barcode)"]
        assert "last error" not in info
        assert set(dir(changer)) >= {"mount", "unmount", "contents"} and "subscribe" not in dir(changer)
    finally:
        link.close()
        changer.close()
    assert "positions :" not in changer.__info__()  # unlinked: the changer's own lines only
