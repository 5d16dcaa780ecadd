"""Hardware faults: barcode readers disconnected, powered off mid-frame, flooding, sending garbage;
sample changers failing mid-mount; a flapping presence sensor.

Real drivers over real loopback sockets and pseudo-terminals to the protocol simulators, driven by
the injectors of :mod:`bliss_sampletrack.testbed.faults.hardware`; the tracker-level tests use a
real ``SampleTracker`` (and the demo changer ``sc``) in the test bed's BLISS session.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import gevent.socket
import pytest
from changer_fixtures import HypotheticalRobot, make_tracker, robot_changer

from bliss_sampletrack.changers.errors import ChangerTimeout, MountFailedError
from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.protocol import ChangerEventKind
from bliss_sampletrack.changers.robot_actions import ActionType, robot_actions
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.core import Status
from bliss_sampletrack.errors import (
    InvalidBarcodeError,
    ReaderConnectionError,
    ReaderProtocolError,
    ReaderTimeout,
)
from bliss_sampletrack.readers import BarcodeRead, ConnectionState, KeyenceSR
from bliss_sampletrack.readers.line_reader import STREAM_QUEUE, Backoff
from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator
from bliss_sampletrack.testbed.faults.hardware import (
    GARBAGE_KINDS,
    cut_mid_frame,
    disconnect,
    fail_next_action,
    flap_presence,
    flood,
    garbage_bytes,
    interrupt_next_action,
    live_greenlets,
    power_off,
    power_on,
    send_garbage,
    wait_until,
)
from bliss_sampletrack.testing import clear_tracker_keys, summary
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.state import TrackerState

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from hub_probe import HubBlockProbe

pytest_plugins = ["changer_fixtures"]

ENGINE = "bliss_sampletrack.readers.line_reader"
# s; without the pump's yield, a 2.4 MB burst held the hub for 2 to 3 s. Asserted in CPU time
# (hub_probe.py: max_cpu_block): the wall clock also counts the time other processes had the cores
# (a clean-clone CI run beside another test suite measured 0.59 s by the wall clock once; a real
# 0.3 s block measures 0.285 s of CPU, so a lost yield in the pump still fails)
HUB_BLOCK_LIMIT = 0.5


def fast(reader: KeyenceSR) -> KeyenceSR:
    reader.backoff = Backoff(0.05, 0.4)
    return reader


@pytest.fixture
def keyence() -> Iterator[tuple[ReaderSimulator, KeyenceSR]]:
    simulator = ReaderSimulator("keyence").start()
    reader = fast(KeyenceSR("bcr", {"tcp": {"url": simulator.url}, "timeout": 1.0}))
    yield simulator, reader
    reader.close()
    simulator.stop()


@pytest.fixture
def serial_keyence(tmp_path: Path) -> Iterator[tuple[SerialSimulator, KeyenceSR]]:
    simulator = SerialSimulator("keyence", link=str(tmp_path / "ttyBCR")).start()
    reader = fast(KeyenceSR("bcr", {"serial": {"url": simulator.port}, "timeout": 1.0}))
    yield simulator, reader
    reader.close()
    simulator.stop()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# -- disconnect and power off -------------------------------------------------------------------------
def test_power_off_is_reported_with_where_and_what_to_do_then_backoff_and_recovery(
    keyence: tuple[ReaderSimulator, KeyenceSR], caplog: pytest.LogCaptureFixture
) -> None:
    simulator, reader = keyence
    simulator.queue("LYS-0001")
    assert reader.read().barcode == "LYS-0001"
    before = live_greenlets()
    caplog.set_level(logging.WARNING, logger=ENGINE)
    power_off(simulator)
    with pytest.raises(ReaderConnectionError) as info:
        reader.read(0.5)
    where = f"tcp://{simulator.url}"
    assert where in str(info.value) and "powered on" in str(info.value) and "'bcr'" in str(info.value)
    assert reader.state is ConnectionState.CONNECTING
    gevent.sleep(1.0)  # off for a while: attempts spaced 0.05, 0.1, 0.2, 0.4, 0.4 s...
    attempts = messages(caplog, f"cannot connect to {where}")
    assert 2 <= len(attempts) <= 10, attempts  # a fixed 0.05 s retry would make 30
    assert reader.backoff.next > reader.backoff.initial
    assert where in (reader.last_error or "") and "reconnects by itself" in (reader.last_error or "")
    assert "connecting" in reader.__info__()
    power_on(simulator)
    simulator.queue("LYS-0002")
    assert reader.read(3.0).barcode == "LYS-0002"
    assert reader.state is ConnectionState.CONNECTED and reader.reconnections >= 1
    assert reader.backoff.next == reader.backoff.initial  # reset by the successful connection
    assert live_greenlets() <= before


def test_a_read_after_the_process_was_blocked_still_waits_its_timeout(
    keyence: tuple[ReaderSimulator, KeyenceSR],
) -> None:
    simulator, reader = keyence
    simulator.behaviour.delay = 0.3  # the reader's decoding time
    simulator.queue("LYS-0001")
    blocking_sleep = gevent.monkey.get_original("time", "sleep")
    blocking_sleep(1.5)  # a blocking computation in the shell: the hub's clock falls behind
    assert reader.read(1.0).barcode == "LYS-0001"  # not a ReaderTimeout at once


@pytest.mark.parametrize("fault", ["disconnect", "power_cycle"])
def test_repeated_tcp_faults_leave_no_greenlet_behind(
    keyence: tuple[ReaderSimulator, KeyenceSR], fault: str
) -> None:
    simulator, reader = keyence
    reader.connect()
    wait_until(lambda: simulator.connections == 1, 3, "the simulator serves the reader")
    before = live_greenlets()
    for cycle in range(5):
        if fault == "disconnect":
            disconnect(simulator)
        else:
            power_off(simulator)
            gevent.sleep(0.1)
            power_on(simulator)
        wait_until(lambda n=cycle: simulator.connections > n + 1, 5, "the reader reconnects")
        simulator.queue(f"CYC-{cycle}")
        assert reader.read(3.0).barcode == f"CYC-{cycle}"
    assert reader.reconnections >= 5
    assert live_greenlets() <= before


def test_a_read_waiting_through_a_power_cut_ends_with_its_timeout_then_the_reader_recovers(
    keyence: tuple[ReaderSimulator, KeyenceSR], caplog: pytest.LogCaptureFixture
) -> None:
    simulator, reader = keyence
    reader.connect()
    before = live_greenlets()
    caplog.set_level(logging.WARNING, logger=ENGINE)
    cut_mid_frame(simulator, b"LYS-00")  # the answer starts, then the device dies: no FIN
    with gevent.Timeout(5):  # never a hang
        with pytest.raises(ReaderTimeout, match=rf"'bcr' \(tcp://{simulator.url}\) gave no result"):
            reader.read(1.0)
    assert reader.state is ConnectionState.CONNECTED  # silence is all a dead peer shows
    [dropped] = messages(caplog, "stopped in the middle of a frame")
    assert "'bcr'" in dropped and simulator.url in dropped and "b'LYS-00'" in dropped
    sock = reader.transport._sock  # type: ignore[attr-defined]
    # without traffic (continuous mode) only keepalive probes find such a connection dead
    assert sock.getsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_KEEPIDLE) == 10
    power_on(simulator)  # rebooted: its stack resets the old connection
    wait_until(lambda: reader.reconnections >= 1, 5, "the reader reconnects after the reset")
    simulator.queue("LYS-0042")
    assert reader.read(3.0).barcode == "LYS-0042"
    assert live_greenlets() <= before


def test_an_unplugged_serial_reader_is_found_again_at_its_link(
    serial_keyence: tuple[SerialSimulator, KeyenceSR],
) -> None:
    simulator, reader = serial_keyence
    simulator.queue("SER-1")
    assert reader.read().barcode == "SER-1"
    before = live_greenlets()
    power_off(simulator)
    with pytest.raises(ReaderConnectionError, match="powered on"):
        reader.read(0.5)
    wait_until(lambda: reader.state is ConnectionState.CONNECTING, 3, "the reader sees the tty gone")
    gevent.sleep(0.3)  # the open fails too while unplugged
    assert f"serial://{simulator.port}" in (reader.last_error or "")
    assert "reconnects by itself" in (reader.last_error or "")
    power_on(simulator)  # a new pty behind the same link
    simulator.queue("SER-2")
    assert reader.read(3.0).barcode == "SER-2"
    for cycle in range(3):  # re-plugged at once, three times
        reconnections = reader.reconnections
        disconnect(simulator)
        wait_until(lambda n=reconnections: reader.reconnections > n, 5, "the reader reopens the link")
        simulator.queue(f"SER-R{cycle}")
        assert reader.read(3.0).barcode == f"SER-R{cycle}"
    assert live_greenlets() <= before


def test_a_serial_fragment_is_never_glued_to_the_next_code(
    serial_keyence: tuple[SerialSimulator, KeyenceSR],
) -> None:
    simulator, reader = serial_keyence
    cut_mid_frame(simulator, b"LYS-00")  # a serial line stays open: the fragment sits in the buffer
    with pytest.raises(ReaderTimeout):
        reader.read(1.0)
    power_on(simulator)
    simulator.queue("LYS-0042")
    assert reader.read(2.0).barcode == "LYS-0042"  # not LYS-00LYS-0042


# -- flood --------------------------------------------------------------------------------------------
def test_a_flood_keeps_memory_bounded_the_hub_free_and_the_latest_code_wins(
    keyence: tuple[ReaderSimulator, KeyenceSR], caplog: pytest.LogCaptureFixture
) -> None:
    simulator, reader = keyence
    reader.connect()
    caplog.set_level(logging.INFO, logger=ENGINE)
    flood_over = gevent.event.Event()
    received: list[Any] = []

    def lagging_follower() -> None:  # subscribes, then does not read until the flood is over
        stream = reader.stream(timeout=60)
        received.append(next(stream))
        flood_over.wait(60)
        for outcome in stream:
            received.append(outcome)
            if isinstance(outcome, BarcodeRead) and outcome.barcode == "LAST-0001":
                return

    follower = gevent.spawn(lagging_follower)
    gevent.sleep(0.05)
    simulator.push("FIRST-0001")
    wait_until(lambda: received, 3, "the follower is subscribed")
    count = 200_000  # one burst of 2.4 MB, as a reader dumping its buffer
    burst = b"".join(b"FLOOD-%06d\r" % i for i in range(count)) + b"LAST-0001\r"
    with HubBlockProbe() as probe:
        simulator.garbage(burst)
        wait_until(lambda: reader.last_read and reader.last_read.barcode == "LAST-0001", 60, "flood read")
        gevent.sleep(0.02)  # the probe wakes once more: a block until now is measured too
    flood_over.set()
    follower.join(10)
    assert probe.max_cpu_block < HUB_BLOCK_LIMIT, (probe.max_cpu_block, probe.max_block)
    assert received[0].barcode == "FIRST-0001"
    backlog = received[1:]
    assert 1 <= len(backlog) <= STREAM_QUEUE  # memory bounded: the oldest were dropped
    assert backlog[-1].barcode == "LAST-0001" and backlog[0].barcode != "FLOOD-000000"
    assert all(isinstance(o, BarcodeRead) for o in backlog)
    engine_records = [r for r in caplog.records if r.name == ENGINE]
    assert len(engine_records) <= 20, len(engine_records)  # throttled: no log storm
    assert any("outcomes behind" in r.getMessage() for r in engine_records)
    simulator.queue("AFTER-0001")
    assert reader.read(3.0).barcode == "AFTER-0001"


def test_a_paced_flood_with_no_follower_is_harmless(keyence: tuple[ReaderSimulator, KeyenceSR]) -> None:
    simulator, reader = keyence
    reader.connect()
    with HubBlockProbe() as probe:
        sent = flood(simulator, 10_000, codes=("FLOOD-A", "FLOOD-B"), per_second=20_000).get(timeout=30)
        wait_until(lambda: reader.last_read and reader.last_read.barcode == "FLOOD-B", 10, "flood read")
        gevent.sleep(0.02)
    assert sent == 10_000 and probe.max_cpu_block < HUB_BLOCK_LIMIT, (probe.max_cpu_block, probe.max_block)
    simulator.queue("AFTER-0001")
    assert reader.read(3.0).barcode == "AFTER-0001"


# -- garbage ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_is_never_a_code_is_logged_with_the_device_and_the_next_frame_reads(
    keyence: tuple[ReaderSimulator, KeyenceSR], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    simulator, reader = keyence
    reader.connect()
    caplog.set_level(logging.WARNING, logger=ENGINE)
    outcomes: list[Any] = []

    def follow() -> None:
        for outcome in reader.stream(timeout=5):
            outcomes.append(outcome)
            if isinstance(outcome, BarcodeRead):
                return

    follower = gevent.spawn(follow)
    gevent.sleep(0.05)
    send_garbage(simulator, kind)
    simulator.garbage(simulator.model.terminator)  # what ends an unterminated line: the next frame
    simulator.push("OK-0001")
    follower.join(5)
    assert [o.barcode for o in outcomes if isinstance(o, BarcodeRead)] == ["OK-0001"]
    errors = outcomes[:-1]
    assert errors and all(isinstance(o, InvalidBarcodeError | ReaderProtocolError) for o in errors)
    logged = messages(caplog, "'bcr'")
    assert logged and all(f"tcp://{simulator.url}" in m for m in logged)
    simulator.queue("OK-0002")
    assert reader.read().barcode == "OK-0002"


# -- the tracker, in the BLISS session ----------------------------------------------------------------
def test_the_tracker_never_records_a_sample_from_a_partial_frame_or_garbage(
    bliss_session: Any, scan_saving: Any, tmp_path: Path
) -> None:
    clear_tracker_keys()
    simulator = SerialSimulator("keyence", link=str(tmp_path / "ttyBCR")).start()
    reader = fast(KeyenceSR("bcr_serial", {"serial": {"url": simulator.port}, "timeout": 1.0}))
    tracker = make_tracker(reader=reader)
    try:
        cut_mid_frame(simulator, b"LYS-00")
        with pytest.raises(ReaderTimeout, match="bcr_serial"):
            tracker.read_barcode(1.0)
        assert tracker.state is TrackerState.UNKNOWN and tracker.outbox.peek(10) == []
        power_on(simulator)  # back on the same line
        simulator.queue("LYS-0002")
        assert tracker.read_barcode(2.0).name == "lysozyme_2"  # the registry's: LYS-0002, whole
        simulator.queue(garbage_bytes("nul", simulator.model.terminator))
        # garbage is no answer: the read waits for one, and its timeout names what was received
        with pytest.raises(ReaderTimeout, match="'bcr_serial' sent"):
            tracker.read_barcode(1.0)
        assert tracker.sample is not None and tracker.sample.barcode == "LYS-0002"
        assert summary(tracker.outbox.peek(10)) == [("mounted", "LYS-0002", "SUCCESS")]
    finally:
        tracker.close()
        reader.close()
        simulator.stop()


def test_a_continuous_tracker_under_garbage_and_flood_keeps_the_latest_code(
    bliss_session: Any, scan_saving: Any
) -> None:
    clear_tracker_keys()
    simulator = ReaderSimulator("keyence").start()
    reader = fast(KeyenceSR("bcr_flood", {"tcp": {"url": simulator.url}, "timeout": 1.0}))
    tracker = make_tracker(reader=reader, reader_mode="continuous")
    try:
        reader.connect()
        gevent.sleep(0.1)  # the tracker's follower is subscribed
        for kind in GARBAGE_KINDS:
            send_garbage(simulator, kind)
        simulator.garbage(simulator.model.terminator)
        gevent.sleep(0.3)
        assert tracker.state is TrackerState.UNKNOWN and tracker.outbox.peek(10) == []
        with HubBlockProbe() as probe:
            flood(simulator, 3000, codes=("LYS-0001",), per_second=5000).get(timeout=30)
            simulator.push("LYS-0002")
            wait_until(
                lambda: tracker.sample is not None and tracker.sample.barcode == "LYS-0002", 30, "latest"
            )
            gevent.sleep(0.02)
        assert probe.max_cpu_block < HUB_BLOCK_LIMIT, (probe.max_cpu_block, probe.max_block)
        assert summary(tracker.outbox.peek(10)) == [
            ("mounted", "LYS-0001", "SUCCESS"),  # 3000 times the same code: one mount
            ("unmounted", "LYS-0001", "SUCCESS"),
            ("mounted", "LYS-0002", "SUCCESS"),
        ]
    finally:
        tracker.close()
        reader.close()
        simulator.stop()


# -- sample changers failing mid-mount ------------------------------------------------------------------
# the changer tests' fixtures (tests/changer_fixtures.py): a tracker without its reader, the demo
# changer ``sc`` (reset, fast) and the link between them

FAULTS = {
    "dropped_pin": (MountFailedError, "the pin was dropped midway"),
    "timeout": (ChangerTimeout, "timed out after 0.3 s"),
    "robot_error": (MountFailedError, "RobotControllerError: gripper axis fault between pick and put"),
    "ctrl_c": (KeyboardInterrupt, "interrupted (KeyboardInterrupt) while the robot was moving"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_load_failing_midway_is_raised_recorded_and_explained_in_the_next_scan(
    fault: str, tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any
) -> None:
    from bliss.common.scans import loopscan

    error, reason = FAULTS[fault]
    sc.mount("1:01")
    if fault == "ctrl_c":
        interrupt_next_action(sc, on=ChangerEventKind.LOAD_STARTED)  # between pick and put
    else:
        fail_next_action(sc, fault)
    with gevent.Timeout(10):
        with pytest.raises(error) as info:
            sc.mount("1:02", timeout=0.3)
    if error is not KeyboardInterrupt:  # Ctrl-C stays Ctrl-C for the shell
        assert f"changer 'sc': load of 1:02 failed: {reason}" in str(info.value)
        assert "call sc.recover()" in str(info.value)
    assert tracker.state is TrackerState.CONFLICT and tracker.sample is None
    why = f"load of 1:02 (LYS-0002) by changer 'sc' failed: {reason}"
    assert why in tracker.snapshot.reason
    assert summary(tracker.outbox.peek(10)) == [
        ("mounted", "LYS-0001", "SUCCESS"),
        ("unmounted", "LYS-0001", "SUCCESS"),
        ("mounted", "LYS-0002", "ERROR"),
    ]
    assert why in tracker.store.history(1)[0].message
    action = robot_actions(tracker, 1)[0]
    assert (action.action_type, action.status, action.address) == (ActionType.LOAD, Status.ERROR, "1:02")
    assert why in action.message
    assert "FAULT after the failed load of 1:02" in sc.__info__()
    tag = loopscan(1, 0.01, bliss_session.env_dict["diode"]).scan_info["sample"]
    assert tag["state"] == "CONFLICT" and why in tag["reason"]
    assert "barcode" not in tag and tag.get("last_known_barcode") != "LYS-0001"  # never the old one
    sc.recover()
    sc.mount("2:01")
    assert tracker.state is TrackerState.MOUNTED and tracker.sample.barcode == "THA-0003"  # type: ignore[union-attr]


@pytest.mark.parametrize("fault", ["robot_error", "ctrl_c"])
def test_an_unload_failing_midway_leaves_the_tracker_in_conflict(
    fault: str, tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mount("1:01")
    if fault == "ctrl_c":
        interrupt_next_action(sc, on=ChangerEventKind.UNLOAD_STARTED, exception=gevent.GreenletExit)
        error: type[BaseException] = gevent.GreenletExit
    else:
        fail_next_action(sc, fault, "unload")
        error = MountFailedError
    with gevent.Timeout(10):
        with pytest.raises(error):
            sc.unmount()
    assert tracker.state is TrackerState.CONFLICT
    assert "unload of 1:01 (LYS-0001) by changer 'sc' failed" in tracker.snapshot.reason
    assert "may still be on the goniometer" in tracker.snapshot.reason
    assert len(tracker.outbox.peek(10)) == 1  # the mount only: nobody saw an unmount
    action = robot_actions(tracker, 1)[0]
    assert (action.action_type, action.status) == (ActionType.UNLOAD, Status.ERROR)


# -- presence sensor flapping ---------------------------------------------------------------------------
def test_a_flapping_presence_sensor_is_debounced_by_the_generic_adapter(tracker: SampleTracker) -> None:
    robot = HypotheticalRobot()
    changer = robot_changer(robot, poll_period=0.01, presence_settle=1.0)
    seen: list[ChangerEventKind] = []
    changer.subscribe(lambda event: seen.append(event.kind))
    link = link_changer(tracker, changer, reader=tracker.reader)
    try:
        tracker.reader.present("LYS-0001")  # type: ignore[union-attr]
        changer.mount("1:01")
        assert tracker.state is TrackerState.MOUNTED
        events = len(tracker.outbox.peek(10))

        def sensor(value: bool) -> None:
            robot.sample_detected = value

        # a glitching sensor: 30 changes, none stable for the settle time, ending where it was
        flap_presence(sensor, count=30, period=0.04, jitter=0.01, final=True).get(timeout=20)
        gevent.sleep(1.3)
        assert ChangerEventKind.PRESENCE not in seen and tracker.state is TrackerState.MOUNTED
        # the same burst, but the pin is really gone at the end: one report, once settled
        flap_presence(sensor, count=30, period=0.04, jitter=0.01, final=False).get(timeout=20)
        wait_until(lambda: tracker.state is TrackerState.CONFLICT, 5, "the settled change is reported")
        gevent.sleep(0.3)
        assert seen.count(ChangerEventKind.PRESENCE) == 1
        assert "no longer detects a pin" in tracker.snapshot.reason
        assert len(tracker.outbox.peek(10)) == events  # a sensor is no mount or unmount
    finally:
        link.close()
        changer.close()
        tracker.reader.remove()  # type: ignore[union-attr]


def test_a_flapping_sensor_on_the_simulated_changer_follows_the_documented_rule(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    """The simulated changer reports every change (no debounce): the first reading that
    contradicts the mount puts the tracker in CONFLICT, each later one is recorded as a change of
    that doubt (the pin moved: a scan running meanwhile is flagged), and none is a contract event
    (see changers/crosscheck.py)."""
    sc.mount("1:01")
    seq = tracker.snapshot.seq
    seen: list[ChangerEventKind] = []
    sc.subscribe(lambda event: seen.append(event.kind))
    flap_presence(sc.set_presence, count=50, period=0.002, final=True).get(timeout=20)
    assert seen.count(ChangerEventKind.PRESENCE) == 50  # every change, the last one back to a pin
    assert tracker.state is TrackerState.CONFLICT and "now detects a pin" in tracker.snapshot.reason
    assert tracker.snapshot.seq == seq + 50  # every reading a change
    assert summary(tracker.outbox.peek(10)) == [("mounted", "LYS-0001", "SUCCESS")]
    assert link.warnings == []
