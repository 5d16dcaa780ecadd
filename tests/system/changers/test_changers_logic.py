"""Sample changers without beacon: contents, the simulated changer, the generic adapter and the
macro helpers against an in-memory tracker (the real state machine). They import BLISS (its
``typecheck``); the cross-checks and records that do not: tests/unit/changers/
test_changers_crosscheck.py."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import gevent
import pytest

from bliss_sampletrack import testing
from bliss_sampletrack.changers.errors import (
    ChangerBusyError,
    ChangerError,
    ChangerTimeout,
    MountFailedError,
)
from bliss_sampletrack.changers.generic import (
    BlissObjectChanger,
    normalise_address,
    normalise_barcode,
    normalise_contents,
    normalise_presence,
)
from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.macros import mounting, tracked_mount, tracked_unmount, unmounting
from bliss_sampletrack.changers.protocol import (
    SampleChanger,
)
from bliss_sampletrack.changers.recording import TrackerSeam
from bliss_sampletrack.changers.robot_actions import ActionType, robot_actions
from bliss_sampletrack.changers.simulated import SimulatedChanger, parse_contents
from bliss_sampletrack.core import Event, EventType, Sample, Source, Status
from bliss_sampletrack.errors import ConfigurationError, MountRefusedError, SampleTrackError
from bliss_sampletrack.testing import events, summary
from bliss_sampletrack.tracker.engine import Tracker
from bliss_sampletrack.tracker.state import EventContext, TrackerState

CTX = EventContext("id00", "test")
T0 = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
REGISTRY = {
    "LYS-0001": Sample(barcode="LYS-0001", name="lysozyme_1"),
    "LYS-0002": Sample(barcode="LYS-0002", name="lysozyme_2"),
    "THA-0003": Sample(barcode="THA-0003", name="thaumatin_3"),
}


def in_memory(**options: Any) -> Tracker:
    """The real engine on fakeredis (``bliss_sampletrack.testing``), with the samples above."""
    return testing.engine(beamline="id00", session="test", samples=REGISTRY.values(), **options)


# -- contents ----------------------------------------------------------------------------------------
def test_contents_forms() -> None:
    pins = parse_contents(
        {"2:5": "B-1", "1:01": {"barcode": "A-1", "name": "a"}, 3: {16: None}, "1:02": None}, 3, 16
    )
    assert list(pins) == ["1:01", "1:02", "2:05", "3:16"]
    assert (pins["1:01"].barcode, pins["1:01"].name, pins["1:01"].label) == ("A-1", "a", "A-1")
    assert pins["3:16"].barcode is None


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({61: "A-1"}, "quote addresses"),
        ({"4:01": "A-1"}, "outside the changer's 3 puck"),
        ({"1:17": "A-1"}, "outside"),
        ({"A1": "A-1"}, "not an address"),
        ({"1:01": "A-1", "1:1": "B-1"}, "twice"),
        ({"1:01": "A-1", "1:02": "A-1"}, "more than one address"),
        ({"1:01": "NOREAD"}, "no-read"),
        ({"1:01": {"barcode": "A-1", "puck": 1}}, "unknown field"),
        ({"1:01": 42}, "must be text"),
        (["A-1"], "must be a mapping"),
    ],
)
def test_contents_errors(contents: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_contents(contents, 3, 16)


def test_changer_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigurationError, match="'sc' in <not from a YAML file>: key 'contents'.*quote"):
        SimulatedChanger("sc", {"contents": {61: "A-1"}})
    with pytest.raises(ConfigurationError, match="key 'speed' is not a known key"):
        SimulatedChanger("sc", {"speed": 3})
    with pytest.raises(ConfigurationError, match="key 'reader' must reference a simulated reader"):
        SimulatedChanger("sc", {"reader": object()})
    with pytest.raises(ConfigurationError, match="key 'pucks' must be between 1 and 99"):
        SimulatedChanger("sc", {"pucks": 0})


# -- the simulated changer and the link, against the in-memory tracker --------------------------------
CONTENTS = {
    "1:01": "LYS-0001",
    "1:02": "LYS-0002",
    "2:01": "THA-0003",
    "3:07": None,
    "3:08": {"name": "xtal_8"},
}


@pytest.fixture
def sc() -> SimulatedChanger:
    return SimulatedChanger("sc", {"contents": CONTENTS, "load_time": 0.0, "unload_time": 0.0})


@pytest.fixture
def fake() -> Tracker:
    return in_memory()


@pytest.fixture
def link(fake: Tracker, sc: SimulatedChanger) -> Any:
    link = link_changer(fake, sc)
    yield link
    link.close()


def test_protocols_are_satisfied(sc: SimulatedChanger, fake: Tracker) -> None:
    assert isinstance(sc, SampleChanger) and isinstance(fake, TrackerSeam)


def test_chained_loads_record_the_unmount_first(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    kinds: list[str] = []
    sc.subscribe(lambda e: kinds.append(str(e.kind)))
    sc.mount("1:01")
    assert sc.mount("LYS-0001").address == "1:01"  # already there: nothing moves
    sc.mount("THA-0003")
    sc.unmount()
    sc.unmount()  # nothing mounted: no change
    assert kinds == ["load_started", "loaded", "unload_started", "unloaded", "load_started", "loaded"] + [
        "unload_started",
        "unloaded",
    ]
    assert summary(events(fake)) == [
        ("mounted", "LYS-0001", "SUCCESS"),
        ("unmounted", "LYS-0001", "SUCCESS"),
        ("mounted", "THA-0003", "SUCCESS"),
        ("unmounted", "THA-0003", "SUCCESS"),
    ]
    assert events(fake)[2].sample.changer_to_contract() == {"name": "sc", "position": "2:01"}
    assert events(fake)[2].sample.name == "thaumatin_3"  # from the registry
    actions = link.robot_actions(10)
    assert [(a.action_type, a.address, a.status) for a in reversed(actions)] == [
        (ActionType.LOAD, "1:01", Status.SUCCESS),
        (ActionType.UNLOAD, "1:01", Status.SUCCESS),
        (ActionType.LOAD, "2:01", Status.SUCCESS),
        (ActionType.UNLOAD, "2:01", Status.SUCCESS),
    ]
    assert all(a.start <= a.end and a.changer == "sc" for a in actions)


def test_shell_arguments_are_typechecked(sc: SimulatedChanger) -> None:
    assert sc.mount("1:01", timeout=30).address == "1:01"  # an int is a number of seconds too
    with pytest.raises(TypeError):
        sc.mount(101)  # type: ignore[arg-type]


def test_refusals_before_moving_record_nothing(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    for target, message in (
        ("1:03", "no pin at 1:03"),
        ("4:01", "no position '4:01'"),
        ("NOPE-1", "no pin with barcode 'NOPE-1'"),
    ):
        with pytest.raises(ChangerError, match=message):
            sc.mount(target)
    with pytest.raises(ChangerError, match="unknown failure 'melted'"):
        sc.fail_next("melted")
    with pytest.raises(ChangerError, match="applies to unload, not 'load'"):
        sc.fail_next("pin_stays", "load")
    assert events(fake) == [] and link.robot_actions() == []


def test_dropped_pin_fault_and_recovery(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    sc.mount("1:01")
    sc.fail_next("dropped_pin")
    with pytest.raises(MountFailedError, match="load of 1:02 failed: the pin was dropped midway.*recover"):
        sc.mount("1:02")
    assert sc.mounted is None and sc.sample_present is False and sc.lost[0][0] == "1:02"
    assert fake.state is TrackerState.CONFLICT and fake.sample is None
    assert summary(events(fake))[-2:] == [
        ("unmounted", "LYS-0001", "SUCCESS"),
        ("mounted", "LYS-0002", "ERROR"),
    ]
    with pytest.raises(ChangerError, match="in fault.*recover"):
        sc.mount("2:01")
    sc.recover()
    sc.mount("2:01")
    assert fake.state is TrackerState.MOUNTED
    assert summary(events(fake))[-2:] == [
        ("unmounted", "LYS-0002", "ERROR"),
        ("mounted", "THA-0003", "SUCCESS"),
    ]
    assert "1:02" not in {p.address for p in sc.contents()}  # the dropped pin stays lost


def test_timeout_and_unload_failures(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    sc.fail_next("timeout")
    with gevent.Timeout(5):
        with pytest.raises(ChangerTimeout, match="load of 1:01 failed: timed out after 0.05 s"):
            sc.mount("1:01", timeout=0.05)
    assert fake.state is TrackerState.CONFLICT
    sc.recover()
    assert "1:01" in {p.address for p in sc.contents()}  # the gripper's pin went back
    sc.mount("1:01")
    sc.fail_next("dropped_pin", "unload")
    with pytest.raises(MountFailedError, match="unload of 1:01 failed: the pin was dropped"):
        sc.unmount()
    assert fake.state is TrackerState.CONFLICT and "may still be on the goniometer" in fake.snapshot.reason
    assert link.robot_actions(1)[0].status is Status.ERROR


def test_presence_cross_checks(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    sc.fail_next("no_pin_detected")
    sc.mount("1:01")
    assert fake.state is TrackerState.CONFLICT and "detects no pin" in events(fake)[-1].message
    sc.reset()
    sc.mount("1:02")
    sc.fail_next("pin_stays")
    sc.unmount()
    assert fake.state is TrackerState.CONFLICT and "still detects a pin" in fake.snapshot.reason
    sc.set_presence(False)  # a hand takes the pin: consistent again, nothing mounted: no change
    assert fake.state is TrackerState.CONFLICT
    sc.mount("2:01")
    sc.set_presence(False)  # the pin falls off
    assert fake.state is TrackerState.CONFLICT and "no longer detects a pin" in fake.snapshot.reason


def test_busy_changer_refuses_a_second_action(sc: SimulatedChanger) -> None:
    sc.load_time = sc.unload_time = 0.1
    first = gevent.spawn(sc.mount, "1:01")
    gevent.sleep(0.02)
    with pytest.raises(ChangerBusyError, match="busy"):
        sc.mount("1:02")
    first.get(timeout=5)
    spawned = gevent.spawn(sc.unmount)
    gevent.sleep(0.02)
    with pytest.raises(ChangerBusyError, match="reset"):
        sc.reset()
    spawned.get(timeout=5)


def test_manual_mounts_with_the_changer_present(fake: Tracker, sc: SimulatedChanger, link: Any) -> None:
    sample = link.manual_mount("LYS-0002")
    assert sample.changer_name is None and fake.snapshot.source is Source.MANUAL
    sc.set_presence(True)  # the pin placed by hand: expected
    assert fake.state is TrackerState.MOUNTED
    with pytest.raises(ChangerError, match="did not mount"):
        sc.mount("1:01")
    link.manual_unmount()
    sc.set_presence(False)
    assert fake.state is TrackerState.EMPTY
    sc.mount("1:01")
    with pytest.raises(ChangerError, match="unmount it with sc.unmount"):
        link.manual_mount("LYS-0002")
    with pytest.raises(MountRefusedError, match="needs a barcode or a name"):
        link.manual_mount()


def test_manual_mount_after_the_pin_resolves_the_conflict(
    fake: Tracker, sc: SimulatedChanger, link: Any
) -> None:
    sc.set_presence(True)
    assert fake.state is TrackerState.CONFLICT
    link.manual_mount("LYS-0001")
    assert fake.state is TrackerState.MOUNTED and summary(events(fake)) == [
        ("mounted", "LYS-0001", "SUCCESS")
    ]


def test_pins_without_identity_and_names_from_contents(
    fake: Tracker, sc: SimulatedChanger, link: Any
) -> None:
    sc.mount("3:07")
    assert fake.state is TrackerState.UNKNOWN and fake.snapshot.sample is None
    assert "3:07, a pin with no barcode or name" in fake.snapshot.reason and events(fake) == []
    assert link.robot_actions(1)[0].status is Status.SUCCESS and link.robot_actions(1)[0].barcode is None
    sc.mount("3:08")
    assert fake.sample is not None and (fake.sample.name, fake.sample.barcode) == ("xtal_8", None)


def test_a_refused_barcode_leaves_the_tracker_unknown(sc: SimulatedChanger) -> None:
    strict = in_memory(unknown_barcode="refuse")
    sc_link = link_changer(strict, sc)
    try:
        sc._configured = parse_contents({"1:01": "UNLISTED-1"}, 3, 16)
        sc.reset()
        sc.mount("1:01")
        assert strict.state is TrackerState.UNKNOWN and "cannot record it" in strict.snapshot.reason
        assert "UNLISTED-1" in sc_link.warnings[-1]
    finally:
        sc_link.close()


def test_link_start_learns_what_the_changer_holds(fake: Tracker, sc: SimulatedChanger) -> None:
    sc.mount("1:01")
    late = link_changer(fake, sc)  # the tracker is UNKNOWN (first start): it learns 1:01
    try:
        assert fake.sample is not None and fake.sample.changer_position == "1:01"
        assert "agree" in late.check()
        assert "ChangerLink 'sc_link'" in late.__info__() and "1:01 mounted" in late.__info__()
    finally:
        late.close()
    sc.unmount()  # not followed any more
    assert fake.state is TrackerState.MOUNTED


def test_link_config_errors() -> None:
    with pytest.raises(ConfigurationError, match="key 'tracker' must reference a SampleTracker"):
        ChangerLink("l", {"tracker": "tracker", "changer": None})
    with pytest.raises(ConfigurationError, match="key 'changer' must reference a sample changer"):
        ChangerLink("l", {"tracker": in_memory(), "changer": object()})


def test_info(sc: SimulatedChanger) -> None:
    sc.mount("1:01")
    sc.fail_next("timeout")
    info = sc.__info__()
    for text in ("SimulatedChanger 'sc' (3 pucks x 16)", "mounted   : 1:01 (LYS-0001)", "next load: timeout"):
        assert text in info, info
    assert "1:01  LYS-0001  <- on the goniometer" in info


# -- the generic adapter --------------------------------------------------------------------------------
class Robot:
    """A hypothetical robot object, as a beamline's BLISS macro class might expose it."""

    name = "robot"

    def __init__(self) -> None:
        self.loaded: tuple[int, int] | None = None
        self.sample_detected = False
        self.broken = False
        self.fail_load: str | None = None
        self.barcodes = {"1:01": "LYS-0001", "1:02": "LYS-0002"}

    def get_loaded_sample(self) -> tuple[int, int] | None:
        if self.broken:
            raise RuntimeError("Tango DevFailed: robot server not running")
        return self.loaded

    def get_contents(self) -> dict[str, str]:
        return dict(self.barcodes)

    def load_sample(self, puck: int, position: int) -> None:
        gevent.sleep(0.01)
        if self.fail_load:
            raise RuntimeError(self.fail_load)
        self.loaded, self.sample_detected = (puck, position), True

    def unload_sample(self) -> None:
        self.loaded, self.sample_detected = None, False


def generic(robot: Robot, **extra: Any) -> BlissObjectChanger:
    config = {
        "object": robot,
        "mounted_address": "get_loaded_sample",
        "presence": "sample_detected",
        "mount": "load_sample",
        "unmount": "unload_sample",
        "contents": "get_contents",
        "mount_args": "puck_position",
        "poll_period": 10.0,  # the tests poll by hand with refresh()
        "presence_settle": 0.0,
        **extra,
    }
    return BlissObjectChanger("robot_sc", config)


def test_normalisers() -> None:
    assert normalise_address((3, 5)) == "3:05" and normalise_address("3:5") == "3:05"
    assert (
        normalise_address("") is None and normalise_address(None) is None and normalise_address("-") is None
    )
    assert normalise_address("A1") == "A1" and normalise_address(b"2:01") == "2:01"
    assert normalise_barcode("NOREAD") is None and normalise_barcode(" X-1 ") == "X-1"
    assert (
        normalise_presence("OFF") is False
        and normalise_presence(1) is True
        and normalise_presence(None) is None
    )
    positions = normalise_contents([("1:1", "A-1"), ("1:2", None)], frozenset({""}))
    assert [(p.address, p.barcode) for p in positions] == [("1:01", "A-1"), ("1:02", None)]


def test_generic_adapter_commanded_and_observed_changes(fake: Tracker) -> None:
    robot = Robot()
    changer = generic(robot)
    assert isinstance(changer, SampleChanger)
    link = link_changer(fake, changer)
    try:
        changer.mount("LYS-0002")  # a barcode, through the robot's contents
        assert robot.loaded == (1, 2) and fake.sample is not None and fake.sample.changer_position == "1:02"
        robot.loaded = (1, 1)  # the robot's own GUI swaps the pin
        changer.refresh()
        assert fake.sample is not None and fake.sample.barcode == "LYS-0001"
        assert summary(events(fake)) == [
            ("mounted", "LYS-0002", "SUCCESS"),
            ("unmounted", "LYS-0002", "SUCCESS"),
            ("mounted", "LYS-0001", "SUCCESS"),
        ]
        actions = link.robot_actions(10)
        assert [a.action_type for a in reversed(actions)] == [
            ActionType.LOAD,
            ActionType.UNLOAD,
            ActionType.LOAD,
        ]
        changer.unmount()
        assert fake.state is TrackerState.EMPTY
        robot.sample_detected = True  # a pin the robot did not load
        changer.refresh()
        assert fake.state is TrackerState.CONFLICT and "nobody mounted" in fake.snapshot.reason
    finally:
        link.close()


def test_generic_adapter_failures_and_offline(fake: Tracker) -> None:
    robot = Robot()
    changer = generic(robot)
    link = link_changer(fake, changer)
    try:
        changer.mount("1:01")
        robot.fail_load = "gripper collision"
        with pytest.raises(MountFailedError, match="load of 1:02 failed.*gripper collision"):
            changer.mount("1:02")
        assert fake.state is TrackerState.CONFLICT and events(fake)[-1].status is Status.ERROR
        assert events(fake)[-1].message == (
            "load of 1:02 (LYS-0002) by changer 'robot_sc' failed: RuntimeError: gripper collision; "
            "the presence sensor detects a pin"  # 1:01's: the robot failed before unloading it
        )
        assert summary(events(fake))[-2:] == [
            ("unmounted", "LYS-0001", "ERROR"),
            ("mounted", "LYS-0002", "ERROR"),
        ]
        robot.fail_load = None
        changer.mount("1:02")
        assert fake.state is TrackerState.MOUNTED
        robot.broken = True
        changer.refresh()
        assert fake.state is TrackerState.UNKNOWN and "went offline" in fake.snapshot.reason
        assert "robot server not running" in changer.offline  # type: ignore[operator]
        robot.broken = False
        changer.refresh()  # back online, the same pin: learnt again
        assert fake.state is TrackerState.MOUNTED and changer.offline is None
    finally:
        link.close()


def test_generic_adapter_polls_cooperatively(fake: Tracker) -> None:
    robot = Robot()
    changer = generic(robot, poll_period=0.01)
    link = link_changer(fake, changer)
    try:
        robot.loaded, robot.sample_detected = (1, 1), True
        with gevent.Timeout(5):
            while fake.state is not TrackerState.MOUNTED:
                gevent.sleep(0.01)
    finally:
        link.close()
    assert changer._poller is None  # the last subscriber gone, polling stops


def test_generic_adapter_config_errors() -> None:
    with pytest.raises(ConfigurationError, match="key 'mounted_address' is missing"):
        BlissObjectChanger("r", {"object": Robot()})
    with pytest.raises(ConfigurationError, match="key 'presence' names 'sensor'"):
        BlissObjectChanger("r", {"object": Robot(), "mounted_address": "loaded", "presence": "sensor"})
    with pytest.raises(ConfigurationError, match="key 'mount_args' must be one of"):
        BlissObjectChanger("r", {"object": Robot(), "mounted_address": "loaded", "mount_args": "tuple"})
    read_only = BlissObjectChanger("r", {"object": Robot(), "mounted_address": "loaded"})
    with pytest.raises(ChangerError, match="no 'mount' method configured"):
        read_only.mount("1:01")


# -- macros ------------------------------------------------------------------------------------------
def test_mounting_records_success_with_changer_fields(fake: Tracker) -> None:
    with mounting(fake, "LYS-0001", changer="flex", address="3:05") as action:
        assert action.sample is not None and action.status is None
    assert fake.sample is not None and fake.sample.changer_to_contract() == {
        "name": "flex",
        "position": "3:05",
    }
    assert action.status is Status.SUCCESS and action.events[0].type is EventType.MOUNTED
    [record] = robot_actions(fake, 5)
    assert (record.action_type, record.status, record.by, record.address) == (
        ActionType.LOAD,
        Status.SUCCESS,
        "macro",
        "3:05",
    )


def test_a_failing_macro_never_leaves_the_sample_mounted(fake: Tracker) -> None:
    fake.record_mount(REGISTRY["LYS-0001"], Source.SAMPLE_CHANGER, at=T0)

    @tracked_mount(fake, changer="flex", address="where")
    def load(barcode: str, where: str = "1:02") -> None:
        raise RuntimeError("gripper jammed")

    with pytest.raises(RuntimeError, match="gripper jammed"):
        load("LYS-0002")
    assert fake.state is TrackerState.CONFLICT and fake.sample is None
    assert summary(events(fake))[-2:] == [
        ("unmounted", "LYS-0001", "ERROR"),
        ("mounted", "LYS-0002", "ERROR"),
    ]
    assert "mount at 1:02 failed in a macro: RuntimeError: gripper jammed" in events(fake)[-1].message
    record = robot_actions(fake, 1)[0]
    assert (record.status, record.message, record.address) == (
        Status.ERROR,
        "RuntimeError: gripper jammed",
        "1:02",
    )


def test_ctrl_c_in_a_macro_is_recorded_and_re_raised(fake: Tracker) -> None:
    with pytest.raises(KeyboardInterrupt):
        with mounting(fake, "THA-0003"):
            raise KeyboardInterrupt
    assert fake.state is TrackerState.CONFLICT and events(fake)[-1].message.endswith("KeyboardInterrupt")


def test_a_refused_barcode_stops_the_macro_before_the_robot_moves() -> None:
    strict = in_memory(unknown_barcode="refuse")
    moved = []

    @tracked_mount(strict)
    def load(barcode: str) -> None:
        moved.append(barcode)

    with pytest.raises(MountRefusedError):
        load("UNLISTED-9")
    assert moved == [] and events(strict) == [] and robot_actions(strict) == []


def test_identity_from_the_result_or_none(fake: Tracker) -> None:
    @tracked_mount(fake, sample=None, address="pos", changer="flex", from_result=True)
    def load(pos: str) -> str:
        return "THA-0003"  # e.g. the robot's datamatrix reader

    load("2:01")
    assert fake.sample is not None and (fake.sample.barcode, fake.sample.changer_position) == (
        "THA-0003",
        "2:01",
    )
    with mounting(fake, changer="flex", address="2:02"):
        pass  # nobody says what it was
    assert fake.state is TrackerState.UNKNOWN and "2:02 a pin with no barcode or name" in fake.snapshot.reason

    @tracked_mount(fake)
    def bad(puck: int) -> None: ...

    with pytest.raises(SampleTrackError, match="parameter 'puck' must be a barcode or a Sample"):
        bad(3)

    @tracked_mount(fake, sample="code")
    def wrong(barcode: str) -> None: ...

    with pytest.raises(SampleTrackError, match="has no parameter 'code'"):
        wrong("LYS-0001")


def test_unmount_macros(fake: Tracker) -> None:
    fake.record_mount(REGISTRY["LYS-0001"], Source.SAMPLE_CHANGER, at=T0)

    @tracked_unmount(fake, changer="flex")
    def unload(fail: bool = False) -> None:
        if fail:
            raise RuntimeError("door open")

    with pytest.raises(RuntimeError, match="door open"):
        unload(fail=True)
    assert fake.state is TrackerState.CONFLICT and "may still be on the goniometer" in fake.snapshot.reason
    unload()
    assert fake.state is TrackerState.EMPTY
    with unmounting(fake):
        pass  # already empty: no event, a record all the same
    assert [a.action_type for a in robot_actions(fake, 5)] == [ActionType.UNLOAD] * 3


def test_a_recording_failure_never_masks_the_macro_error(fake: Tracker) -> None:
    def broken(reason: str) -> None:
        raise ConnectionError("Redis is down")

    fake.set_conflict = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="robot fault") as caught:
        with unmounting(fake):
            raise RuntimeError("robot fault")
    assert "could not record this failure" in caught.value.__notes__[0]


def test_tracker_by_name_is_looked_up_when_the_macro_runs(
    fake: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bliss.config.static

    looked_up: list[str] = []

    def get(name: str) -> Any:
        looked_up.append(name)
        return fake

    monkeypatch.setattr(bliss.config.static, "get_config", lambda: SimpleNamespace(get=get))

    @tracked_mount("tracker")
    def load(barcode: str) -> None: ...

    assert looked_up == []  # not at import (decoration) time
    load("LYS-0001")
    assert looked_up == ["tracker"] and fake.sample is not None


def test_tracker_by_name_must_be_a_tracker() -> None:
    with pytest.raises(SampleTrackError, match="not a SampleTracker"):
        with mounting(object(), "LYS-0001"):  # type: ignore[arg-type]
            pass


def test_a_move_redis_cannot_take_is_reconciled_at_the_next_event(
    fake: Tracker, sc: SimulatedChanger, link: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # beacon's Redis restarting while the robot loads: the move happened, nothing could be written
    import redis

    real_record_mount = fake.record_mount

    def redis_down(*args: Any, **kwargs: Any) -> list[Event]:
        raise redis.exceptions.ConnectionError("Error 111 connecting to localhost:25001. Connection refused.")

    fake.record_mount = redis_down  # type: ignore[method-assign]
    before = fake.state
    assert sc.mount("1:01").address == "1:01"  # the changer's action is not broken by the tracker
    assert fake.state is before and events(fake) == []
    assert link.missed is not None and "1:01" in link.missed
    assert any(r.levelname == "ERROR" and "not recorded" in r.getMessage() for r in caplog.records)
    assert "missed" in link.__info__()

    fake.record_mount = real_record_mount  # type: ignore[method-assign]
    sc.mount("2:01")  # Redis is back: the link first compares, then records the new move
    assert link.missed is None
    assert summary(events(fake))[-1] == ("mounted", "THA-0003", "SUCCESS")
    assert fake.state is TrackerState.MOUNTED and fake.sample is not None
    assert fake.sample.barcode == "THA-0003"
