"""The shell views without BLISS: rendering (story, pucks, tables, local times), what they read
(the outbox's delivery states, the scan log on fakeredis), the argument checks, and the engine's
small things (history(n) bounds, warnings that stand only while their situation lasts)."""

from __future__ import annotations

import inspect
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import fakeredis
import gevent
import pytest

from bliss_sampletrack import testing
from bliss_sampletrack.changers.protocol import Mounted, Position
from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.shell import command
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import ChangerOfflineError
from bliss_sampletrack.tracker.state import Snapshot, TrackerState
from bliss_sampletrack.tracker.views import pucks, story
from bliss_sampletrack.tracker.views.scanlog import LoggingTagger, ScanLog, ScanRecord, record_for
from bliss_sampletrack.tracker.views.text import BOLD, Row, local_time, table

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 12, 3, 9, 14, 7, tzinfo=UTC)  # 10:14:07 CET


def mounted(barcode: str | None, name: str | None = None, *, at: datetime = T0, **sample: Any) -> Event:
    return Event.mounted(
        Sample(barcode=barcode, name=name, **sample),
        beamline="id00",
        session="demo_session",
        proposal="mx0001",
        source=Source.SAMPLE_CHANGER,
        occurred_at=at,
    )


def unmounted(event: Event, *, at: datetime, status: Status = Status.SUCCESS, message: str = "") -> Event:
    return Event.unmounted(
        event.sample,
        beamline="id00",
        session="demo_session",
        source=Source.MANUAL,
        occurred_at=at,
        mount_event_id=event.event_id,
        status=status,
        message=message,
    )


def fill(box: RedisStreamOutbox, events: list[Event]) -> None:
    pipe = box.redis.pipeline(transaction=True)
    box.add(pipe, events)
    pipe.execute()


# -- text ------------------------------------------------------------------------------------------
def test_local_time_names_the_zone_in_force_at_that_instant() -> None:
    assert local_time(T0, PARIS) == "2026-12-03 10:14:07 CET"
    assert local_time(T0 - timedelta(days=150), PARIS) == "2026-07-06 11:14:07 CEST"
    assert local_time(T0, UTC) == "2026-12-03 09:14:07 UTC"


def test_table_marks_one_row_and_is_bold_only_with_ansi() -> None:
    rows = [Row(["1:01", "in the dewar"]), Row(["1:02", "mounted"], marked=True)]
    plain = table(["pos", "state"], rows)
    assert plain == ["    pos   state", "    1:01  in the dewar", "  > 1:02  mounted"]
    assert "\x1b" not in "".join(plain)
    bold = table(["pos", "state"], rows, ansi=True)
    assert bold[2] == f"  > {BOLD}1:02  mounted\x1b[0m" and bold[1] == plain[1]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table(["a", "b", "c"], rows)


# -- the story -------------------------------------------------------------------------------------
def test_match_by_barcode_name_then_ignoring_case() -> None:
    a = mounted("LYS-0001", "lysozyme_1")
    b = mounted("THA-0003", "thaumatin_3")
    c = mounted("LYS-0009", "lysozyme_1")  # another pin with the same name
    events = [a, b, c]
    assert story.match_events(events, "LYS-0001") == ([a], "barcode 'LYS-0001', exactly")
    assert story.match_events(events, "lysozyme_1") == ([a, c], "sample name 'lysozyme_1', exactly")
    assert story.match_events(events, " lys-0001 ") == ([a], "barcode 'lys-0001', ignoring case")
    assert story.match_events(events, "nothing-like-it") == ([], "")


def test_delivery_state_per_client_from_the_outbox() -> None:
    box = RedisStreamOutbox(fakeredis.FakeRedis(), "id00")
    first, second, third = mounted("A-1"), mounted("A-2"), mounted("A-3")
    fill(box, [first, second, third])
    for client in ("svc", "strict", "down"):
        box.register(client)
    [e1, e2, e3] = box.next_entries("svc", 3)
    box.finish("svc", e3.id)  # svc: all three accepted
    box.finish("strict", e1.id)
    box.dead_letter("strict", e2, "422 sample.barcode: too long")  # strict refused the second
    ids = [first.event_id, second.event_id, third.event_id]
    states = story.delivery_states(box, ["svc", "strict", "down"], ids)
    as_text = {i: [d.text() for d in states[i]] for i in ids}
    assert as_text[first.event_id] == ["svc delivered", "strict delivered", "down waiting"]
    assert as_text[second.event_id] == [
        "svc delivered",
        "strict dead letter (422 sample.barcode: too long)",
        "down waiting",
    ]
    assert as_text[third.event_id] == ["svc delivered", "strict waiting", "down waiting"]
    # more pending than the view reads: the unread ones are said to be unchecked, not delivered
    limited = story.delivery_states(box, ["down"], ids, limit=1)
    assert [d.state for i in ids for d in limited[i]] == [
        story.DeliveryState.WAITING,
        story.DeliveryState.UNCHECKED,
        story.DeliveryState.UNCHECKED,
    ]
    # once every client is done, the entries are trimmed from the stream: delivered
    box.finish("down", e3.id)
    box.finish("strict", e3.id)
    box.trim()
    assert [entry_id.decode() for entry_id, _ in box.redis.xrange(box.key)] == [e3.id]  # 1, 2 trimmed
    after = story.delivery_states(box, ["svc", "down"], ids)
    assert {d.state for found in after.values() for d in found} == {story.DeliveryState.DELIVERED}


def scan(number: int, state: str = "MOUNTED", reason: str | None = None) -> ScanRecord:
    return ScanRecord(
        number,
        f"{number}_loopscan",
        f"loopscan {number} 0.1",
        f"/data/mx0001/s_{number:04d}.h5",
        "mx0001/coll/ds1",
        T0 + timedelta(seconds=number),
        state,
        reason,
    )


def test_render_story_local_times_scans_deliveries_and_the_current_mount() -> None:
    first = mounted("LYS-0002", "lysozyme_2", changer_name="sc", changer_position="1:02")
    back = unmounted(first, at=T0 + timedelta(minutes=5))
    again = mounted("LYS-0002", "lysozyme_2", at=T0 + timedelta(minutes=9), changer_name="sc")
    delivered = (story.Delivery("svc", story.DeliveryState.DELIVERED),)
    chapters = story.chapters(
        [first, back, again],
        {
            first.event_id: delivered,
            back.event_id: (story.Delivery("svc", story.DeliveryState.DEAD, "409 conflict"),),
            again.event_id: (story.Delivery("svc", story.DeliveryState.WAITING),),
        },
        {str(first.event_id): [scan(3), scan(4, "UNKNOWN", "changer 'sc' is moving")]},
        current_mount=again.event_id,
    )
    text = story.render_story(
        story.Story("tracker", "LYS-0002", "barcode 'LYS-0002', exactly", chapters, 7, 1000, ("svc",), 200),
        tz=PARIS,
    )
    lines = text.splitlines()
    assert lines[0] == "tracker 'tracker': the story of lysozyme_2 (LYS-0002)"
    assert "matched   : barcode 'LYS-0002', exactly, in the last 7 event(s) kept (history_size 1000)" in text
    assert "now       : mounted since 2026-12-03 10:23:07 CET (marked >)" in text
    rows = [line for line in lines if re.match(r"^  [ >] 2026-", line)]
    assert len(rows) == 3 and rows[2].startswith("  > 2026-12-03 10:23:07 CET")  # the current mount
    assert rows[0].startswith("    2026-12-03 10:14:07 CET  mounted    SUCCESS  sample_changer  sc 1:02")
    assert "demo_session@" in rows[0] and "(mx0001)" in rows[0]
    assert "#3  loopscan 3 0.1  at 2026-12-03 10:14:10 CET  file /data/mx0001/s_0003.h5" in text
    assert "#4  loopscan 4 0.1" in text and "[tagged UNKNOWN: changer 'sc' is moving]" in text
    assert "scans while mounted (2):" in text and "scans while mounted: none recorded" in text
    assert "delivery: svc dead letter (409 conflict)" in text and "delivery: svc waiting" in text
    assert "\x1b" not in text


def test_render_story_of_nothing_says_how_it_was_looked_for() -> None:
    text = story.render_story(
        story.Story(
            "tracker", "BC-0042", "", (), 12, 1000, (), 200, registry="no registry knows barcode 'BC-0042'"
        )
    )
    assert text.splitlines() == [
        "tracker 'tracker': nothing recorded for 'BC-0042': no event in the last 12 event(s) kept "
        "(history_size 1000) has it as barcode or sample name (compared exactly, then ignoring case)",
        "  registry  : no registry knows barcode 'BC-0042'",
    ]


# -- the scan log ----------------------------------------------------------------------------------
def test_scan_log_keeps_a_bounded_list_per_mount_with_an_expiry() -> None:
    redis = fakeredis.FakeRedis()
    log = ScanLog(redis, "tracker", per_mount=3)
    mount = str(uuid.uuid4())
    for number in range(1, 6):
        log.add(mount, scan(number))
    log.flush(5)
    raw = redis.lrange(f"sampletrack:tracker:scans:{mount}", 0, -1)
    assert [ScanRecord.from_json(r).number for r in raw] == [5, 4, 3]  # newest first, bounded
    assert 0 < redis.ttl(f"sampletrack:tracker:scans:{mount}") <= 90 * 24 * 3600
    assert [s.number for s in log.for_mounts([mount, "other"])[mount]] == [3, 4, 5]
    assert log.for_mounts([mount, "other"])["other"] == []
    assert log.for_mounts([mount])[mount][0] == scan(3)  # every field comes back


def test_scan_log_write_failure_is_counted_never_raised() -> None:
    server = fakeredis.FakeServer()
    server.connected = False  # Redis down
    log = ScanLog(fakeredis.FakeRedis(server=server), "tracker")
    log.add(str(uuid.uuid4()), scan(1))  # returns at once: the scan does not wait
    log.flush(5)
    assert log.failures == 1 and "ConnectionError" in str(log.last_failure)


def test_record_for_reads_what_bliss_sets_at_start() -> None:
    info = {
        "scan_nb": 12,
        "name": "12_loopscan",
        "title": "loopscan 5 0.1",
        "filename": "/data/x.h5",
        "start_time": "2026-12-03T10:14:08.5+01:00",
    }
    record = record_for(info, {"state": "MOUNTED", "mount_event_id": "x"}, "p/c/d")
    assert record == ScanRecord(
        12,
        "12_loopscan",
        "loopscan 5 0.1",
        "/data/x.h5",
        "p/c/d",
        datetime(2026, 12, 3, 9, 14, 8, 500000, UTC),
        "MOUNTED",
    )
    odd = record_for({"scan_nb": True, "start_time": "yesterday"}, {"state": "UNKNOWN", "reason": "r"}, None)
    assert (odd.number, odd.started_at, odd.state, odd.reason) == (None, None, "UNKNOWN", "r")


class FakeScan:
    """What BLISS passes to a user scan metadata callable (hashable, weakly referenced)."""

    def __init__(self, number: int) -> None:
        self.scan_info = {"scan_nb": number}


def test_logging_tagger_calls_its_hook_once_per_scan_and_a_failing_hook_keeps_the_tag() -> None:
    seen: list[tuple[int, str]] = []
    tagger = LoggingTagger(
        "tracker",
        lambda start=True: {"state": "MOUNTED", "@seq": 1},
        on_start=lambda s, tag: seen.append((s.scan_info["scan_nb"], tag["state"])),
    )
    one, two = FakeScan(1), FakeScan(2)
    assert tagger(one)["state"] == "MOUNTED"  # START
    tagger(two)
    assert tagger(one)["@changed_during_scan"] is False  # END: no second record
    assert seen == [(1, "MOUNTED"), (2, "MOUNTED")]

    def broken(scan: Any, tag: dict[str, Any]) -> None:
        raise KeyError("scan_info")

    failing = LoggingTagger("tracker", lambda start=True: {"state": "EMPTY", "@seq": 2}, on_start=broken)
    assert failing(FakeScan(3)) == {"state": "EMPTY", "@seq": 2}
    assert failing.hook_failures == 1 and failing.failures == 0


# -- the pucks -------------------------------------------------------------------------------------
class FakeChanger:
    """A changer with 2 pucks of 4 positions, answering the protocol from fixed contents."""

    name = "sc"
    pucks = 2
    positions_per_puck = 4

    def __init__(
        self, contents: list[Position], mounted: Mounted | None, missing: dict[str, tuple[str | None, str]]
    ) -> None:
        self._contents, self._mounted, self._missing = contents, mounted, missing
        self.offline = False

    @property
    def mounted(self) -> Mounted | None:
        return self._mounted

    @property
    def sample_present(self) -> bool | None:
        return self._mounted is not None

    def mount(self, target: str, timeout: float | None = None) -> Mounted:
        raise NotImplementedError

    def unmount(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def contents(self) -> list[Position]:
        if self.offline:
            raise ChangerOfflineError("changer 'sc': contents (robot.get_contents) failed: gone")
        return self._contents

    def expected(self, address: str) -> Position | None:
        return None

    def subscribe(self, callback: Any) -> None: ...

    def unsubscribe(self, callback: Any) -> None: ...

    def missing_pins(self) -> dict[str, tuple[str | None, str]]:
        return self._missing

    def __info__(self) -> str:
        return "fake"


def test_puck_view_states_names_last_seen_and_the_mounted_pin() -> None:
    changer = FakeChanger(
        [
            Position("1:01", "LYS-0001"),
            Position("1:02", "LYS-0002", on_goniometer=True),
            Position("2:01", "UNK-0042"),
            Position("2:03", None, name="crystal_7"),
        ],
        Mounted("1:02", "LYS-0002"),
        {"2:04": ("UNK-0044", "dropped by the robot")},
    )
    registry = {
        "LYS-0001": Sample(barcode="LYS-0001", name="lysozyme_1"),
        "LYS-0002": Sample(barcode="LYS-0002", name="lysozyme_2"),
    }
    first = mounted("LYS-0001", "lysozyme_1", changer_name="sc", changer_position="1:01")
    history = [  # newest first, as the store gives it
        mounted(
            "LYS-0002", "lysozyme_2", at=T0 + timedelta(minutes=6), changer_name="sc", changer_position="1:02"
        ),
        unmounted(first, at=T0 + timedelta(minutes=5)),
        first,
        Event.mounted(
            Sample(barcode="UNK-0044", changer_name="sc", changer_position="2:04"),
            beamline="id00",
            session="s",
            source=Source.SAMPLE_CHANGER,
            occurred_at=T0 - timedelta(minutes=1),
            status=Status.ERROR,
            message="dropped",
        ),
    ]
    snap = Snapshot(
        TrackerState.MOUNTED,
        T0,
        Sample(barcode="LYS-0002", name="lysozyme_2", changer_name="sc", changer_position="1:02"),
        Source.SAMPLE_CHANGER,
        uuid.uuid4(),
    )
    view = pucks.gather_pucks(changer, resolve=registry.get, history=history, snapshot=snap, tz=PARIS)
    text = pucks.render_pucks(view)
    lines = text.splitlines()
    assert lines[0] == "changer 'sc' (FakeChanger): 2 pucks x 4, 5 pin(s) listed"
    assert "  goniometer: 1:02 (LYS-0002)" in lines
    assert "  tracker   : MOUNTED lysozyme_2 (LYS-0002) from sc 1:02" in lines
    assert "    puck 1   #>..  2 pin(s)" in lines and "    puck 2   #.#?  3 pin(s)" in lines
    row = {line[6:10]: line for line in lines if re.match(r"^    [ >] \d:\d\d  ", line)}
    assert sorted(row) == ["1:01", "1:02", "2:01", "2:03", "2:04"]
    assert row["1:02"].startswith("    > 1:02  mounted")
    assert "lysozyme_2" in row["1:02"] and "mounted 2026-12-03 10:20:07 CET" in row["1:02"]
    assert (
        row["1:01"].startswith("      1:01  in the dewar")
        and "unmounted 2026-12-03 10:19:07 CET" in row["1:01"]
    )
    assert "UNK-0042" in row["2:01"] and "(in no registry)" in row["2:01"] and "not moved" in row["2:01"]
    assert "(no barcode)" in row["2:03"] and "crystal_7 (changer)" in row["2:03"]
    assert (
        row["2:04"].startswith("      2:04  unknown")
        and "mounted 2026-12-03 10:13:07 CET (ERROR)" in row["2:04"]
    )
    assert "UNK-0044" in row["2:04"] and row["2:04"].endswith("; dropped by the robot")
    assert "\x1b" not in text and BOLD in pucks.render_pucks(view, ansi=True)


def test_puck_view_of_a_changer_that_cannot_tell() -> None:
    changer = FakeChanger([], None, {})
    changer.offline = True
    text = pucks.render_pucks(pucks.gather_pucks(changer, resolve=lambda code: None, history=[]))
    assert "changer cannot be read: changer 'sc': contents (robot.get_contents) failed: gone" in text
    assert "    puck 1   ????  0 pin(s)" in text and "(no pin listed)" in text


# -- the shell's argument checks -------------------------------------------------------------------
class Shell:
    name = "tracker"

    @command
    def mount(self, barcode: str | None = None, name: str | None = None, force: bool = False) -> str:
        return f"mounted {barcode}"

    @command
    def drain(self, timeout: int | float = 60.0) -> float:
        return timeout


def test_command_names_the_argument_the_value_and_the_real_signature() -> None:
    shell = Shell()
    assert shell.mount("LYS-0001") == "mounted LYS-0001" and shell.drain(3) == 3
    assert list(inspect.signature(Shell.mount).parameters) == ["self", "barcode", "name", "force"]
    usage = "usage: tracker.mount(barcode: str | None = None, name: str | None = None, force: bool = False)"
    with pytest.raises(TypeError) as wrong:
        shell.mount(42)  # type: ignore[arg-type]
    assert (
        str(wrong.value) == f"tracker.mount(): argument 'barcode' must be str | None, got int 42\n  {usage}"
    )
    with pytest.raises(TypeError, match=r"argument 'force' must be bool, got str 'yes'"):
        shell.mount("LYS-0001", force="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError) as unknown:
        shell.mount(barcod="LYS-0001")  # type: ignore[call-arg]
    assert "unexpected keyword argument 'barcod'" in str(unknown.value) and usage in str(unknown.value)
    with pytest.raises(TypeError, match=r"argument 'timeout' must be int \| float, got str 'soon'"):
        shell.drain("soon")  # type: ignore[arg-type]
    assert "Intended Usage" not in str(wrong.value)


# -- the engine: history bounds, standing warnings ------------------------------------------------
def test_history_count_must_be_at_least_one() -> None:
    tracker = testing.engine(samples=[Sample(barcode="LYS-0001", name="lyso")])
    tracker.mount("LYS-0001")
    tracker.unmount()
    assert len(tracker.history_text(1).splitlines()) == 2  # header + the newest event
    assert "unmounted" in tracker.history_text(1)
    for wrong in (0, -1, True):
        with pytest.raises(ValueError, match=r"history\(count\).*whole number >= 1"):
            tracker.history_text(wrong)


def test_a_warning_stands_only_while_its_situation_lasts() -> None:
    tracker = testing.engine(samples=[Sample(barcode="LYS-0001", name="lyso")])
    tracker.resolve("UNLISTED-1")  # a look-up: logged, no situation in the tracker
    assert "in no sample registry" in tracker.warnings[-1]
    assert tracker.standing_warnings() == []
    tracker.mount("UNLISTED-1")  # now the tracker holds a sample that no registry knows
    assert [w.message for w in tracker.standing_warnings()] == [tracker.warnings[-1]]
    tracker.mount("LYS-0001")  # replaced by a known sample: the situation is over
    assert tracker.standing_warnings() == []
    assert len(tracker.warnings) == 2  # the log keeps both


def test_a_warning_without_a_situation_stands_until_the_next_change() -> None:
    tracker = testing.engine(samples=[Sample(barcode="LYS-0001", name="lyso")])
    tracker._warn("something odd happened")
    assert [w.message for w in tracker.standing_warnings()] == ["something odd happened"]
    gevent.sleep(0)
    tracker.mount("LYS-0001")
    assert tracker.standing_warnings() == []


def test_read_history_leaves_out_what_it_cannot_read() -> None:
    redis = fakeredis.FakeRedis()
    kept = [mounted("LYS-0001"), mounted("LYS-0002")]
    redis.lpush("h", kept[1].to_json(), "not json", kept[0].to_json())  # LPUSH: the last is first
    assert story.read_history(redis, "h") == [kept[0], kept[1]]
