#!/usr/bin/env python
"""Soak run: the whole chain under seeded random faults for a given time, then count what got through.

    .venv/bin/python tools/soak.py --duration 600 [--seed N] [--workdir DIR] [--keep] [--json FILE]

Sets up, on loopback: a real beacon whose settings Redis keeps an append-only file (``appendonly
yes``, ``appendfsync everysec``: the README's setting), the tracking service on SQLite behind two
faulty proxies (:class:`~bliss_sampletrack.testbed.faults.service.FaultyProxy`, one per beamline,
switched together), the standalone deliverer (``sampletrack deliver``) of tracker ``soak_tracker``,
and a BLISS session process (``testbed.faults.session``, loop mode) running mount -> saved loopscan
-> unmount with that tracker. Until ``--duration`` s are over, one fault at a time, in a seeded
random order (each kind once per shuffled round) with random gaps and lengths:

- ``session_kill9``: kill -9 of the session at a random step (mount, scan, HDF5 writing), restarted;
- ``deliverer_kill9`` (at a random moment), ``deliverer_kill9_in_flight`` (once the service stored
  a batch whose answer the proxy holds back): kill -9 of the deliverer, restarted;
- the service ``down``, ``slow`` (stored then answered late, or reaching it late), ``5xx``, ``4xx``
  (dead-letters by design: retried after the soak, and left out of the order check), ``garbage``
  (each kind), ``reset`` (connection reset mid-answer);
- ``redis_shutdown`` / ``redis_kill9``: the settings Redis stopped and started again (same AOF);
  BLISS needs a new session after that: the session is restarted.

Hardware faults cannot be injected into that session process (it mounts by hand, no reader, no
changer), so a second loop runs in this process: a BLISS session ``soak_hardware`` with a real
Keyence driver on its TCP simulator (``soak_bcr``), a simulated changer reading each pin with it
(``soak_sc``), a ``ChangerLink`` and a second tracker ``soak_hw`` (beamline ``soak01``) that
delivers in this session through the faulty proxy. Its faults are counted separately: reader
powered off, powered off mid-read (partial frame), disconnected, flooding, sending garbage; the
changer failing mid-mount (dropped pin, timeout, robot error, interrupted); the presence sensor
flapping.

At the end the faults stop, the dead letters are retried, delivery drains (bounded wait), and the
checks use independent sources: produced = each tracker's history in Redis (plus the mounts the
sessions reported done), stored = the service's database (and its API's count), scans = every HDF5
file read with h5py, compared with the sample mounted at the scan's start per the history.

Exit status: 0 when nothing was lost, duplicated, stored out of order, tagged wrongly or recorded as
the wrong sample; 1 otherwise; 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("soak")

TRACKER, BEAMLINE = "soak_tracker", "soak00"
HW_TRACKER, HW_BEAMLINE, HW_SESSION = "soak_hw", "soak01", "soak_hardware"
#: the delivery clients' names: BLISS registers every mapping with a "name" as a config object,
#: so the two trackers' clients need names of their own (a clash hides the second tracker)
CLIENT, HW_CLIENT = "soak_svc", "soak_hw_svc"
TOKEN_ENV = "SOAK_SAMPLETRACK_TOKEN"
CLIENT_TIMEOUT_S = 2  # the delivery clients' timeout: a "slow" service answers later than this
OWNER_TTL_S = 2  # a killed session's claim on its tracker expires this soon
LOCK_TTL_S = 2  # a killed deliverer's lock likewise
HISTORY_SIZE = 1_000_000  # the history in Redis is the soak's record of what was produced
#: the hardware loop's changer: address -> barcode (three known to the manifest, three unknown)
CONTENTS = {
    "1:01": "LYS-0001",
    "1:02": "LYS-0002",
    "1:03": "THA-0003",
    "1:04": "UNK-7001",
    "2:01": "UNK-7002",
    "2:02": "UNK-7003",
}
SESSION_FAULTS = (
    "session_kill9",
    "deliverer_kill9",
    "deliverer_kill9_in_flight",
    "service_down",
    "service_slow",
    "service_5xx",
    "service_4xx",
    "service_garbage",
    "service_reset",
    "redis_shutdown",
    "redis_kill9",
)
HARDWARE_FAULTS = (
    "reader_power_off",
    "reader_power_cut_mid_read",
    "reader_disconnect",
    "reader_flood",
    "reader_garbage",
    "changer_fail_mid_mount",
    "presence_flapping",
)
CHANGER_FAILURES = ("dropped_pin", "timeout", "robot_error", "interrupted")
HW_FAULT_SHARE = 0.4  # the share of hardware cycles that get a fault
CHANGER_ACTION_TIMEOUT_S = 3.0
DRIVER_STUCK_S = 150.0  # no step reported for this long: the session is hung (a finding)


class SoakError(RuntimeError):
    """The soak could not run (setup failed, a process would not start again)."""


# ------------------------------------------------------------------------------------------------
# configuration written into the beacon
# ------------------------------------------------------------------------------------------------
def soak_yaml(url: str, hw_url: str) -> str:
    contents = "\n".join(f'    "{address}": {barcode}' for address, barcode in CONTENTS.items())

    def delivery(client: str, target: str) -> str:
        return (
            f'    - {{name: {client}, type: rest, url: "{target}", token_env: {TOKEN_ENV}, '
            f"timeout: {CLIENT_TIMEOUT_S}, max_batch: 20}}"
        )

    return f"""\
# written by tools/soak.py
- name: {TRACKER}
  plugin: bliss
  package: bliss_sampletrack.tracker.controller
  class: SampleTracker
  beamline: {BEAMLINE}
  manifest: sampletrack/samples.csv
  unknown_barcode: accept
  history_size: {HISTORY_SIZE}
  owner_ttl: {OWNER_TTL_S}
  deliver_in_session: false          # the standalone deliverer does (and gets killed)
  delivery:
{delivery(CLIENT, url)}
- name: soak_bcr
  plugin: bliss
  package: bliss_sampletrack.readers
  class: SimulatedReader
  family: keyence
  delay: 0.02
  timeout: 2
- name: soak_sc
  plugin: bliss
  package: bliss_sampletrack.changers.simulated
  class: SimulatedChanger
  pucks: 2
  positions_per_puck: 16
  load_time: 0.1
  unload_time: 0.1
  timeout: {CHANGER_ACTION_TIMEOUT_S}
  reader: $soak_bcr
  reader_timeout: 1
  contents:
{contents}
- name: {HW_TRACKER}
  plugin: bliss
  package: bliss_sampletrack.tracker.controller
  class: SampleTracker
  beamline: {HW_BEAMLINE}
  manifest: sampletrack/samples.csv
  unknown_barcode: accept
  history_size: {HISTORY_SIZE}
  owner_ttl: {OWNER_TTL_S}
  tag_scans: false
  deliver_in_session: true
  delivery:
{delivery(HW_CLIENT, hw_url)}
- name: soak_sc_link
  plugin: bliss
  package: bliss_sampletrack.changers.link
  class: ChangerLink
  tracker: ${HW_TRACKER}
  changer: $soak_sc
  check_presence: true
"""


SESSION_YAML = f"""\
# written by tools/soak.py: the hardware loop's session (in the soak process itself)
- class: Session
  name: {HW_SESSION}
  config-objects: [soak_bcr, soak_sc, {HW_TRACKER}, soak_sc_link]
"""


# ------------------------------------------------------------------------------------------------
# the hardware loop (in this process)
# ------------------------------------------------------------------------------------------------
class HardwareLoop:
    """Changer mounts read by a real reader driver, recorded by a tracker, with hardware faults."""

    def __init__(self, rng: random.Random) -> None:
        from bliss.config.static import get_config

        config = get_config()
        self.rng = rng
        self.reader = config.get("soak_bcr")
        self.changer = config.get("soak_sc")
        self.tracker = config.get(HW_TRACKER)
        self.link = config.get("soak_sc_link")
        self.simulator = self.reader.simulator
        self.cycles = 0
        self.faults: Counter[str] = Counter()
        self.details: Counter[str] = Counter()
        self.errors: list[str] = []  # what failed that no injected fault explains: findings
        self.state_checks = 0
        self.state_wrong = 0
        self.redis_failures = 0  # actions that raised a Redis error (settings Redis down)
        self._armed = False  # an injected changer failure waits for the next load
        self._fired = False  # the action running met it
        self.changer.subscribe(self._on_changer)
        self._stop = False
        self._bag: list[str] = []
        self.greenlet: Any = None

    def start(self) -> None:
        import gevent

        self.greenlet = gevent.spawn(self._run)
        self.greenlet.name = "soak-hardware-loop"

    def stop(self, timeout: float = 60.0) -> None:
        self._stop = True
        if self.greenlet is not None:
            self.greenlet.join(timeout)
            if not self.greenlet.dead:
                self.errors.append(f"the hardware loop did not end within {timeout:g} s")
                self.greenlet.kill(timeout=10)

    def _run(self) -> None:
        import gevent

        while not self._stop:
            kind = None
            if self.rng.random() < HW_FAULT_SHARE:
                if not self._bag:
                    self._bag = list(HARDWARE_FAULTS)
                    self.rng.shuffle(self._bag)
                kind = self._bag.pop()
            try:
                self._cycle(kind)
            except Exception as exc:  # a finding to report (log with traceback); the loop goes on
                log.exception("hardware cycle with fault %s failed", kind)
                self.errors.append(f"cycle {self.cycles} ({kind or 'no fault'}): {type(exc).__name__}: {exc}")
            self.cycles += 1
            gevent.sleep(self.rng.uniform(0.2, 0.8))

    def _cycle(self, kind: str | None) -> None:
        from bliss_sampletrack.testbed.faults import hardware

        held = self.changer.mounted
        # another pin each time: mounting the pin already there moves nothing (no read, no load)
        address = self.rng.choice(sorted(a for a in CONTENTS if held is None or a != held.address))
        after: list[Callable[[], None]] = []
        if kind is not None:
            self.faults[kind] += 1
        if kind == "reader_power_off":
            hardware.power_off(self.simulator)
        elif kind == "reader_power_cut_mid_read":
            hardware.cut_mid_frame(self.simulator, b"LYS-00", vanish_after=0.3)
        elif kind == "reader_disconnect":
            import gevent

            later = gevent.spawn_later(self.rng.uniform(0.0, 0.15), hardware.disconnect, self.simulator)
            after.append(lambda: later.join(5))
        elif kind == "reader_flood":
            count = self.rng.randint(500, 5000)
            flood = hardware.flood(self.simulator, count, codes=("FLOOD-0001", "FLOOD-0002"), per_second=5000)
            after.append(lambda: flood.join(30))
        elif kind == "reader_garbage":
            which = self.rng.choice(hardware.GARBAGE_KINDS)
            self.details[f"garbage:{which}"] += 1
            hardware.send_garbage(self.simulator, which, seed=self.rng.randrange(1 << 30))
        elif kind == "changer_fail_mid_mount":
            failure = self.rng.choice(CHANGER_FAILURES)
            self.details[f"changer:{failure}"] += 1
            self._armed = True  # until a load starts (it may not in this cycle: see _on_changer)
            if failure == "interrupted":  # a killed greenlet while the robot moves (Ctrl-C's twin)
                import gevent

                hardware.interrupt_next_action(self.changer, exception=gevent.GreenletExit)
            else:
                hardware.fail_next_action(self.changer, failure, "load")
        try:
            mounted = self._act("mount", address)
            if mounted and kind == "presence_flapping":
                count = self.rng.randint(5, 40)
                flapping = hardware.flap_presence(
                    self.changer.set_presence,
                    count=count,
                    period=0.01,
                    jitter=0.005,
                    final=True,
                    seed=self.rng.randrange(1 << 30),
                )
                flapping.get(timeout=30)
            if mounted:
                self._act("unmount")
        finally:
            for undo in after:
                undo()
            self._reader_back()

    def _reader_back(self) -> None:
        """The reader as before the cycle's fault: an answer the cycle did not trigger dropped (a
        power cut queued for a read that never came), powered on (after a cut's own power-off)."""
        import gevent

        self.simulator.behaviour.answers.clear()
        if self.simulator.cut:
            gevent.sleep(0.4)  # the cut's "vanish" (0.3 s after it) first, then the power comes back
        self.simulator.power_on()

    def _on_changer(self, event: Any) -> None:
        from bliss_sampletrack.changers.protocol import ChangerEventKind

        if event.kind is ChangerEventKind.LOAD_STARTED and self._armed:
            self._armed, self._fired = False, True  # this load meets the injected failure

    def _act(self, action: str, *args: Any) -> bool:
        """Run a changer action in its own greenlet (an interruption kills that one); True when it
        completed. A failure that no injected changer fault explains is a finding."""
        import gevent
        import redis

        what = f"changer {action} {' '.join(args)}".strip()
        method = getattr(self.changer, action)
        self._fired = False
        greenlet = gevent.spawn(method, *args, timeout=CHANGER_ACTION_TIMEOUT_S)
        greenlet.join(CHANGER_ACTION_TIMEOUT_S + 30)
        if not greenlet.dead:
            greenlet.kill(timeout=10)
            self.errors.append(f"{what} still running after 30 s: killed")
        failed = not greenlet.successful() or isinstance(greenlet.value, gevent.GreenletExit)
        if failed and not self._fired:
            exc = greenlet.exception or greenlet.value
            log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
            self.errors.append(f"{what} failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, redis.exceptions.RedisError):
                self.redis_failures += 1
        self._check_state(what)
        if failed:
            self.changer.recover()
            if self.changer.lost:  # a dropped pin: put the configured contents back
                self.changer.reset()
        return not failed

    def _check_state(self, what: str) -> None:
        """After each action, a tracker that claims to know (MOUNTED or EMPTY) agrees with what
        the changer holds: what the next scan would be tagged with. UNKNOWN and CONFLICT are
        doubt, said as such in the tag: never wrong."""
        snapshot = self.tracker.snapshot
        if str(snapshot.state) not in ("MOUNTED", "EMPTY"):
            return
        self.state_checks += 1
        mounted = self.changer.mounted
        holds = None if mounted is None else mounted.barcode
        claims = snapshot.sample.barcode if str(snapshot.state) == "MOUNTED" and snapshot.sample else None
        if claims != holds:
            self.state_wrong += 1
            self.errors.append(
                f"after {what}: tracker {HW_TRACKER!r} says {snapshot.state} {claims or ''}, "
                f"the changer holds {holds or 'nothing'}"
            )

    def close(self) -> None:
        self.changer.unsubscribe(self._on_changer)
        for obj in (self.link, self.tracker, self.reader):
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - closing at the end: report, go on closing
                log.warning("closing %r: %s", obj, exc)


# ------------------------------------------------------------------------------------------------
# the soak
# ------------------------------------------------------------------------------------------------
@dataclass
class Result:
    seed: int
    duration_s: float
    elapsed_s: float = 0.0
    cycles_session: int = 0
    cycles_hardware: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    fault_details: dict[str, int] = field(default_factory=dict)
    hardware_faults: dict[str, int] = field(default_factory=dict)
    hardware_fault_details: dict[str, int] = field(default_factory=dict)
    events_produced: int = 0
    events_produced_session: int = 0
    events_produced_hardware: int = 0
    mounts_reported: int = 0
    reported_not_recorded: int = 0
    events_stored: int = 0
    events_stored_api: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected_stored: int = 0
    out_of_order: int = 0
    dead_lettered_retried: int = 0
    pending_after_drain: int = 0
    dead_letters_after_drain: int = 0
    sequence_errors: list[str] = field(default_factory=list)
    scans_checked: int = 0
    tagged_wrongly: int = 0
    scans_untagged: int = 0
    unreadable_scans: int = 0
    unreadable_files: int = 0
    saved_scans_missing: int = 0
    hardware_mounts_checked: int = 0
    hardware_wrong_sample: int = 0
    hardware_state_checks: int = 0
    hardware_state_wrong: int = 0
    hardware_redis_failures: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    hardware_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # details of each failed check (first ones)
    fault_log: list[str] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected_stored
            or self.out_of_order
            or self.tagged_wrongly
            or self.saved_scans_missing
            or self.hardware_wrong_sample
        )


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.seed: int = args.seed
        self.rng = random.Random(self.seed)
        self.result = Result(seed=self.seed, duration_s=args.duration, workdir=str(workdir))
        self.faults: Counter[str] = Counter()
        self.details: Counter[str] = Counter()
        self.drivers: list[Any] = []
        self.driver: Any = None
        self.deliverer: Any = None
        self.service: Any = None
        self.proxies: list[Any] = []
        self.server: Any = None
        self.redis: Any = None
        self.session: Any = None
        self.hardware: HardwareLoop | None = None
        self.token = ""
        self.started = time.monotonic()
        self.deadline = 0.0
        self._progress_seen: tuple[int, float] = (0, time.monotonic())

    # -- output ------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f} s] {message}"
        print(line, flush=True)
        log.info("%s", message)

    def note_fault(self, kind: str, detail: str = "") -> None:
        self.faults[kind] += 1
        if detail:
            self.details[f"{kind}:{detail}"] += 1
        text = f"fault {kind}" + (f" ({detail})" if detail else "")
        self.result.fault_log.append(f"{time.monotonic() - self.started:.1f} s {text}")
        self.say(text)

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        import gevent

        from bliss_sampletrack.demo.service_process import ServiceProcess
        from bliss_sampletrack.testbed.beacon import free_port, start_beacon
        from bliss_sampletrack.testbed.faults.redis import BeaconRedis
        from bliss_sampletrack.testbed.faults.service import FaultyProxy
        from bliss_sampletrack.testbed.session import open_session

        # batches here are small: no validation worker processes (they cost CPU at start-up)
        os.environ.setdefault("SAMPLETRACK_SERVICE_VALIDATION_WORKERS", "0")
        self.service = ServiceProcess(self.workdir / "tracking.db", free_port(), self.workdir / "service.log")
        self.service.start(timeout=60)
        self.token = self._create_token()
        os.environ[TOKEN_ENV] = self.token  # the deliverer, the sessions and this one read it from there
        self.proxies = [FaultyProxy(self.service.api_url).start() for _ in range(2)]
        self.say(f"tracking service {self.service.api_url} (SQLite), proxies {[p.url for p in self.proxies]}")
        self.server = start_beacon(self.workdir / "beacon", redis_persistence=True)
        (self.server.db_path / "soak").mkdir(exist_ok=True)
        (self.server.db_path / "soak" / "soak.yml").write_text(soak_yaml(*(p.url for p in self.proxies)))
        (self.server.db_path / "sessions" / f"{HW_SESSION}.yml").write_text(SESSION_YAML)
        self.redis = BeaconRedis(self.server, "settings")
        self.say(f"beacon {self.server.host}, settings Redis pid {self.redis.pid} with appendonly everysec")
        # the session process and the deliverer start while this process opens its own session
        starting = [gevent.spawn(self._new_driver), gevent.spawn(self._start_deliverer)]
        self.session = open_session(self.server, HW_SESSION, self.workdir / "hardware-data")
        self.hardware = HardwareLoop(random.Random(self.seed * 7919 + 1))
        gevent.joinall(starting, raise_error=True)
        self.say("session process, deliverer and hardware loop ready")

    def _create_token(self) -> str:
        from bliss_sampletrack.demo.service_process import SERVICE, service_env

        args = [SERVICE, "token", "create", "--db", self.service.db_url, "--label", "soak"]
        args += ["--beamline", BEAMLINE, "--beamline", HW_BEAMLINE]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=service_env()
        )
        if done.returncode != 0:
            raise SoakError(f"token create failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def _start_deliverer(self) -> None:
        from bliss_sampletrack.testbed.faults.processes import start_deliverer

        self.deliverer = start_deliverer(
            self.server.host, TRACKER, self.workdir / "deliverer.log", lock_ttl=LOCK_TTL_S, timeout=180
        )

    def _restart_deliverer(self) -> None:
        from bliss_sampletrack.testbed.faults.processes import ProcessError

        for attempt in range(3):
            try:
                self.deliverer.start(timeout=180)
                return
            except ProcessError as exc:
                self.result.unexpected_exits.append(f"deliverer did not start (attempt {attempt + 1}): {exc}")
                self.deliverer.kill9()
        raise SoakError("the deliverer would not start again; see deliverer.log")

    def _new_driver(self) -> None:
        """A new session process (a fresh data folder: scan numbers start again per folder)."""
        from bliss_sampletrack.errors import TestBedError
        from bliss_sampletrack.testbed.faults.session import SessionDriver

        for attempt in range(3):
            number = len(self.drivers) + 1
            driver = SessionDriver(
                self.server,
                self.workdir / "scans" / f"session-{number:03d}",
                mode="loop",
                seed=self.seed * 1000 + number,
                node=TRACKER,
                name=TRACKER,
                cycles=10_000_000,
                points=5,
                wait_owner=60.0,
            )
            self.drivers.append(driver)
            try:
                driver.start(timeout=240)
            except TestBedError as exc:
                self.result.unexpected_exits.append(
                    f"session {number} did not start (attempt {attempt + 1}): {exc}"
                )
                if driver.process is not None and driver.alive():
                    driver.kill()
                continue
            self.driver = driver
            self._progress_seen = (0, time.monotonic())
            return
        raise SoakError("the session process would not start again; see scans/session-*/driver-*.stderr")

    # -- the faults ----------------------------------------------------------------------------------
    def run(self) -> None:
        import gevent

        assert self.hardware is not None
        self.hardware.start()
        self.started_faults = time.monotonic()
        self.deadline = self.started_faults + self.args.duration
        self.say(f"injecting faults for {self.args.duration:g} s (seed {self.seed})")
        bag: list[str] = []
        while True:
            gap = self.rng.uniform(0.5, 2.0)
            if time.monotonic() + gap >= self.deadline:
                break
            gevent.sleep(gap)
            if not bag:
                bag = list(SESSION_FAULTS)
                self.rng.shuffle(bag)
            self.inject(bag.pop())
            self.supervise()
        self.say("fault injection over")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def inject(self, kind: str) -> None:
        import gevent

        from bliss_sampletrack.testbed.faults.processes import kill9_at_random, kill9_when
        from bliss_sampletrack.testbed.faults.service import GARBAGE_KINDS

        rng = self.rng
        length = rng.uniform(1.0, 4.0)
        if kind == "session_kill9":
            self._kill_session()
        elif kind == "deliverer_kill9":
            delay = kill9_at_random(self.deliverer, rng, 0.0, 1.5)
            self.note_fault(kind, "")
            log.info("deliverer killed %.2f s after the fault began", delay)
            self._restart_deliverer()
        elif kind == "deliverer_kill9_in_flight":
            proxy = self.proxies[0]
            proxy.slow(1.5, store_first=True)
            answered = proxy.stats.upstream_answers
            met = kill9_when(self.deliverer, lambda: proxy.stats.upstream_answers > answered, 10.0)
            proxy.healthy()
            self.note_fault(
                kind, "batch stored, answer held back" if met else "nothing in flight within 10 s"
            )
            self._restart_deliverer()
        elif kind.startswith("service_"):
            proxy = self.proxies[0]
            detail = self._service_fault(kind, rng, GARBAGE_KINDS)
            seen = proxy.stats.requests[proxy.fault.value]
            self.note_fault(kind, detail)
            gevent.sleep(length)
            # on until the session's deliverer met it at least once (a refused connection never
            # reaches the proxy: "down" just lasts); at most 10 s more
            with gevent.Timeout(10.0, False):
                while kind != "service_down" and proxy.stats.requests[proxy.fault.value] == seen:
                    gevent.sleep(0.05)
            for proxy in self.proxies:
                proxy.healthy()
        elif kind in ("redis_shutdown", "redis_kill9"):
            down_for = rng.uniform(0.0, 2.0)
            self.redis.restart(kill=kind == "redis_kill9", down_for=down_for)
            self.note_fault(kind, "")
            # BLISS's settings cache does not survive a Redis restart: a new session
            if self.driver is not None and self.driver.alive():
                self.driver.kill()
            self._new_driver_if_time()
        else:
            raise ValueError(f"unknown fault {kind!r}")

    def _service_fault(self, kind: str, rng: random.Random, garbage_kinds: tuple[str, ...]) -> str:
        detail = ""
        for proxy in self.proxies:
            if kind == "service_down":
                proxy.down()
            elif kind == "service_slow":
                store_first = rng.random() < 0.5 if not detail else detail == "stored, answered late"
                detail = "stored, answered late" if store_first else "reaches the service late"
                proxy.slow(CLIENT_TIMEOUT_S + 1.0, store_first=store_first)
            elif kind == "service_5xx":
                status = int(detail) if detail else rng.choice((500, 502, 503, 504))
                detail = str(status)
                proxy.error_5xx(status, retry_after=1 if status == 503 else None)
            elif kind == "service_4xx":  # every event sent now is dead-lettered: retried at the end
                detail = detail or str(rng.choice((400, 404)))
                proxy.error_4xx(int(detail))
            elif kind == "service_garbage":
                detail = detail or rng.choice(garbage_kinds)
                proxy.garbage(detail)
            elif kind == "service_reset":
                proxy.reset()
            else:
                raise ValueError(f"unknown fault {kind!r}")
        return detail

    def _kill_session(self) -> None:
        from bliss_sampletrack.errors import TestBedError
        from bliss_sampletrack.testbed.faults.session import kill_at_random_step

        if self.driver is None:  # not restarted this close to the end
            return
        try:
            last = kill_at_random_step(self.driver, self.rng, max_steps=10, max_delay=0.4)
        except TestBedError as exc:  # it died or hung before the chosen step: a finding
            self.result.unexpected_exits.append(f"session before its kill: {exc}")
            if self.driver.alive():
                self.driver.kill()
            self._new_driver_if_time()
            return
        self.note_fault("session_kill9", f"after {last['step']}")
        self._new_driver_if_time()

    def _new_driver_if_time(self) -> None:
        # a session takes 10-30 s to start here: not worth it when the soak is about to end
        if self.remaining() > 15:
            self._new_driver()
        else:
            self.say("soak ending: the killed session is not restarted")
            self.driver = None

    def supervise(self) -> None:
        """Restart what died without being killed (each such exit is a finding)."""
        if not self.deliverer.alive:
            code = self.deliverer.process.returncode if self.deliverer.process else None
            self.result.unexpected_exits.append(
                f"deliverer exited by itself (code {code}): {self.deliverer.log_tail(800)}"
            )
            self.say(f"deliverer exited by itself (code {code}): restarting it")
            self._restart_deliverer()
        if self.driver is None:
            return
        if not self.driver.alive():
            self.result.unexpected_exits.append(
                f"session exited by itself (code {self.driver.process.returncode}): "
                f"last steps {self.driver.progress[-3:]}; stderr: {self.driver.stderr_tail(15)}"
            )
            self.say(f"session exited by itself (code {self.driver.process.returncode}): restarting it")
            self._new_driver_if_time()
            return
        count, since = self._progress_seen
        if len(self.driver.progress) != count:
            self._progress_seen = (len(self.driver.progress), time.monotonic())
        elif time.monotonic() - since > DRIVER_STUCK_S:
            self.result.unexpected_exits.append(
                f"session hung: no step for {DRIVER_STUCK_S:g} s after {self.driver.progress[-1:]}; "
                f"stderr: {self.driver.stderr_tail(15)}"
            )
            self.driver.kill()
            self._new_driver_if_time()

    # -- the end -------------------------------------------------------------------------------------
    def finish(self) -> Result:
        import gevent

        from bliss_sampletrack.errors import TestBedError

        for proxy in self.proxies:
            proxy.healthy()
        assert self.hardware is not None
        self.hardware.stop()
        if self.driver is not None and self.driver.alive():
            start = len(self.driver.progress)
            try:  # end between two cycles if it can (a stop mid-cycle is one more kill: fine too)
                self.driver.wait_for(lambda p: p["step"] == "unmounted", 60.0, start)
            except TestBedError as exc:
                self.result.unexpected_exits.append(f"session at the end: {exc}")
            self.driver.stop(timeout=30)
        self.say("faults over: retrying dead letters and draining the outboxes")
        dead = self._drain(timeout=max(90.0, min(300.0, self.args.duration / 3)))
        self.result.dead_lettered_retried = len(dead)
        self.deliverer.terminate(timeout=30)
        self.hardware.close()
        gevent.sleep(0)
        self.result.elapsed_s = round(time.monotonic() - self.started, 1)
        self.analyse(dead)
        return self.result

    def _drain(self, timeout: float) -> set[str]:
        """Retry the dead letters (the injected 4xx) and wait until both outboxes are delivered.
        Returns the ids of the events that were dead letters."""
        import gevent

        from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
        from bliss_sampletrack.testbed.faults.processes import sampletrack_command

        assert self.hardware is not None
        client = self.redis.client()
        outboxes = [
            (RedisStreamOutbox(client, BEAMLINE), CLIENT),
            (RedisStreamOutbox(client, HW_BEAMLINE), HW_CLIENT),
        ]
        dead: set[str] = set()
        deadline = time.monotonic() + timeout
        try:
            while True:
                letters = [outbox.dead_letters(name) for outbox, name in outboxes]
                dead |= {str(letter.event.event_id) for group in letters for letter in group if letter.event}
                if letters[0]:  # the session's tracker: as an operator would, after the fix
                    done = subprocess.run(
                        [*sampletrack_command(), "deliver", "--retry-dead-letters"]
                        + ["--beacon", self.server.host, "--tracker", TRACKER],
                        capture_output=True,
                        text=True,
                        timeout=180,
                        stdin=subprocess.DEVNULL,
                    )
                    self.say(f"sampletrack deliver --retry-dead-letters: {done.stdout.strip()}")
                if letters[1]:
                    retried = self.hardware.tracker.delivery.retry_dead_letters()
                    self.say(f"{HW_TRACKER}.retry_dead_letters(): {retried}")
                pending = sum(outbox.pending(name) for outbox, name in outboxes)
                left = sum(len(outbox.dead_letters(name)) for outbox, name in outboxes)
                if pending == 0 and left == 0:
                    self.say("both outboxes delivered")
                    return dead
                if time.monotonic() > deadline:
                    self.say(f"not drained after {timeout:g} s: {pending} pending, {left} dead letter(s)")
                    self.result.pending_after_drain = pending
                    self.result.dead_letters_after_drain = left
                    return dead
                gevent.sleep(1.0)
        finally:
            client.close()

    # -- the checks ----------------------------------------------------------------------------------
    def analyse(self, dead: set[str]) -> None:
        from bliss_sampletrack.testbed.faults.session import check_event_sequence, read_history

        r = self.result
        r.cycles_session = sum(len(d.steps("unmounted")) for d in self.drivers)
        r.cycles_hardware = self.hardware.cycles if self.hardware else 0
        r.faults = dict(sorted(self.faults.items()))
        r.fault_details = dict(sorted(self.details.items()))
        if self.hardware is not None:
            r.hardware_faults = dict(sorted(self.hardware.faults.items()))
            r.hardware_fault_details = dict(sorted(self.hardware.details.items()))
            r.hardware_errors = list(self.hardware.errors)
            r.hardware_state_checks = self.hardware.state_checks
            r.hardware_state_wrong = self.hardware.state_wrong
            r.hardware_redis_failures = self.hardware.redis_failures
        client = self.redis.client()
        try:
            histories = {
                BEAMLINE: read_history(client, TRACKER),
                HW_BEAMLINE: read_history(client, HW_TRACKER),
            }
        finally:
            client.close()
        for beamline, history in histories.items():
            try:
                check_event_sequence(history)
            except AssertionError as exc:
                r.sequence_errors.append(f"{beamline}: {exc}")
        session, hardware = histories[BEAMLINE], histories[HW_BEAMLINE]
        r.events_produced_session, r.events_produced_hardware = len(session), len(hardware)
        r.events_produced = len(session) + len(hardware)
        self._check_reported(session)
        self._check_stored(histories, dead)
        self._check_scans(session)
        self._check_hardware(hardware)

    def _problem(self, text: str) -> None:
        if len(self.result.problems) < 40:
            self.result.problems.append(text)

    def _check_reported(self, history: list[Any]) -> None:
        """Every mount a session reported done is in the history (committed before it returned)."""
        recorded = {str(e.event_id) for e in history}
        reported = {
            s["mount_event_id"] for d in self.drivers for s in d.steps("mounted") if s["mount_event_id"]
        }
        self.result.mounts_reported = len(reported)
        missing = sorted(reported - recorded)
        self.result.reported_not_recorded = len(missing)
        for event_id in missing:
            self._problem(f"mount {event_id} reported done by a session is not in the history")

    def _stored_rows(self) -> list[tuple[int, str, str, str | None, int, str]]:
        path = self.workdir / "tracking.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return list(
                db.execute(
                    "SELECT seq, event_id, beamline, barcode, occurred_us, type FROM events "
                    "WHERE beamline IN (?, ?) ORDER BY seq",
                    (BEAMLINE, HW_BEAMLINE),
                )
            )

    def _api_count(self) -> int:
        import requests

        total = 0
        for beamline in (BEAMLINE, HW_BEAMLINE):
            cursor: str | None = None
            while True:
                params = {"beamline": beamline, "limit": 1000, **({"cursor": cursor} if cursor else {})}
                answer = requests.get(
                    f"{self.service.api_url}/events",
                    params=params,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=30,
                )
                answer.raise_for_status()
                page = answer.json()
                total += len(page["events"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        return total

    def _check_stored(self, histories: dict[str, list[Any]], dead: set[str]) -> None:
        r = self.result
        rows = self._stored_rows()
        r.events_stored = len(rows)
        r.events_stored_api = self._api_count()
        if r.events_stored_api != r.events_stored:
            self._problem(f"the API lists {r.events_stored_api} events, the database holds {r.events_stored}")
        produced = {str(e.event_id) for history in histories.values() for e in history}
        ids = Counter(row[1] for row in rows)
        stored = set(ids)
        lost = sorted(produced - stored)
        r.lost = len(lost) + r.reported_not_recorded
        for event_id in lost:
            self._problem(f"event {event_id} produced (in a history) but not stored")
        unexpected = sorted(stored - produced)
        r.unexpected_stored = len(unexpected)
        for event_id in unexpected:
            self._problem(f"event {event_id} stored but in no history")
        twice = {event_id: n for event_id, n in ids.items() if n > 1}
        transitions = Counter((row[2], row[5], row[3], row[4]) for row in rows)
        same = {key: n for key, n in transitions.items() if n > 1}
        r.duplicated = sum(n - 1 for n in twice.values()) + sum(n - 1 for n in same.values())
        for event_id, n in twice.items():
            self._problem(f"event id {event_id} stored {n} times")
        for key, n in same.items():
            self._problem(f"transition {key} stored {n} times under different ids")
        for beamline, history in histories.items():
            index = {str(e.event_id): i for i, e in enumerate(history)}
            order = [
                index[row[1]] for row in rows if row[2] == beamline and row[1] in index and row[1] not in dead
            ]
            for before, after in zip(order, order[1:], strict=False):
                if after < before:
                    r.out_of_order += 1
                    self._problem(
                        f"{beamline}: event {history[after].event_id} (history #{after}) stored after "
                        f"{history[before].event_id} (history #{before})"
                    )

    def _check_scans(self, history: list[Any]) -> None:
        """Every scan file read with h5py: its tag is the mount open at the scan's start per the
        history; every scan a session reported saved is there with its sample."""
        from bliss_sampletrack.core import EventType
        from bliss_sampletrack.testbed.faults.session import scan_tags

        r = self.result
        times = [e.occurred_at for e in history]
        readable: dict[tuple[str, str], Any] = {}
        bad_files = set()
        for found in scan_tags(self.workdir / "scans"):
            if found.error:
                r.unreadable_scans += 1
                bad_files.add(found.filename)
                log.info("unreadable scan %s %s: %s", found.filename, found.scan, found.error)
                continue
            readable[(str(Path(found.filename)), found.scan)] = found
            if found.tag is None:
                r.scans_untagged += 1
                continue
            r.scans_checked += 1
            start = found.start_time
            at = bisect.bisect_right(times, start) - 1 if start is not None else -1
            expected = history[at] if at >= 0 and history[at].type is EventType.MOUNTED else None
            tag = found.tag
            if (
                expected is None
                or tag.get("state") != "MOUNTED"
                or tag.get("mount_event_id") != str(expected.event_id)
                or tag.get("barcode") != expected.sample.barcode
            ):
                r.tagged_wrongly += 1
                what = "nothing" if expected is None else f"{expected.sample.label} ({expected.event_id})"
                self._problem(
                    f"scan {found.filename} {found.scan} started {start} tagged "
                    f"{tag.get('state')} {tag.get('barcode')} ({tag.get('mount_event_id')}); "
                    f"mounted then: {what}"
                )
        r.unreadable_files = len(bad_files)
        for driver in self.drivers:
            for step in driver.steps("scan_saved"):
                found = readable.get((str(Path(step["filename"])), f"{step['scan_nb']}.1"))
                if found is None or found.tag is None or found.tag.get("barcode") != step["barcode"]:
                    r.saved_scans_missing += 1
                    self._problem(f"scan reported saved {step} not found with its tag ({found})")

    def _check_hardware(self, history: list[Any]) -> None:
        """The hardware tracker never records another sample than the pin the changer loaded
        (no flood code, no garbage, no partial frame): the barcode of the changer's address."""
        from bliss_sampletrack.core import EventType

        r = self.result
        for event in history:
            if event.type is not EventType.MOUNTED:
                continue
            r.hardware_mounts_checked += 1
            position = event.sample.changer_position
            if CONTENTS.get(position or "") != event.sample.barcode:
                r.hardware_wrong_sample += 1
                self._problem(
                    f"hardware mount {event.event_id} records {event.sample.label} at {position}, "
                    f"the changer holds {CONTENTS.get(position or '')} there"
                )

    # -- tear-down -----------------------------------------------------------------------------------
    def teardown(self) -> None:
        for step in (
            lambda: self.hardware and self.hardware.stop(10),
            lambda: self.driver and self.driver.alive() and self.driver.kill(),
            lambda: self.deliverer and self.deliverer.terminate(timeout=15),
            lambda: self.session and self.session.close(),
            lambda: [proxy.stop() for proxy in self.proxies],
            lambda: self.server and self.server.stop(),
            lambda: self.service and self.service.stop(),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - tearing down: report, go on with the rest
                log.warning("tear-down step failed: %s", exc)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _rows(counts: dict[str, int]) -> Iterator[tuple[str, str]]:
    for kind, count in counts.items():
        yield f"    {kind}", str(count)


def summary(r: Result) -> str:
    rows: list[tuple[str, str]] = [
        ("duration", f"{r.duration_s:g} s of faults, {r.elapsed_s:g} s in all (seed {r.seed})"),
        (
            "cycles run",
            f"{r.cycles_session} session (mount, saved scan, unmount), {r.cycles_hardware} hardware",
        ),
        ("faults injected", str(sum(r.faults.values()))),
        *_rows(r.faults),
        ("hardware faults (in-process loop)", str(sum(r.hardware_faults.values()))),
        *_rows(r.hardware_faults),
        (
            "events produced",
            f"{r.events_produced} (session {r.events_produced_session}, hardware "
            f"{r.events_produced_hardware}; histories in Redis)",
        ),
        (
            "mounts reported by sessions",
            f"{r.mounts_reported} ({r.reported_not_recorded} not in the history)",
        ),
        ("events stored", f"{r.events_stored} (service database; its API lists {r.events_stored_api})"),
        ("lost", str(r.lost)),
        ("duplicated", str(r.duplicated)),
        ("stored but never produced", str(r.unexpected_stored)),
        (
            "out of order",
            f"{r.out_of_order} ({r.dead_lettered_retried} dead-lettered by injected 4xx, replayed after "
            "the soak: left out of the order check by design)",
        ),
        ("pending after drain", f"{r.pending_after_drain} ({r.dead_letters_after_drain} dead letters)"),
        ("scans checked", str(r.scans_checked)),
        ("tagged wrongly", str(r.tagged_wrongly)),
        ("saved scans missing", str(r.saved_scans_missing)),
        ("scans without a tag", f"{r.scans_untagged} (kill artefacts: the scan the kill interrupted)"),
        (
            "unreadable scan files",
            f"{r.unreadable_files} ({r.unreadable_scans} scan groups; kill artefacts: being written "
            "when the session was killed)",
        ),
        (
            "hardware: wrong sample",
            f"{r.hardware_wrong_sample} of {r.hardware_mounts_checked} mounts recorded",
        ),
        (
            "hardware: tracker vs changer",
            f"{r.hardware_state_wrong} of {r.hardware_state_checks} checks after an action disagree",
        ),
        ("event sequence errors", str(len(r.sequence_errors))),
        ("unexpected exits / hangs", str(len(r.unexpected_exits))),
        (
            "hardware loop errors",
            f"{len(r.hardware_errors)} ({r.hardware_redis_failures} changer actions raised a Redis error)",
        ),
        ("result", "PASS" if r.ok else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = ["Soak summary"] + [f"  {name:<{width}}{value}" for name, value in rows]
    for title, items in (
        ("problems", r.problems),
        ("event sequence errors", r.sequence_errors),
        ("unexpected exits / hangs", r.unexpected_exits),
        ("hardware loop errors", r.hardware_errors),
    ):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {item[:600]}" for item in items[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, required=True, help="seconds of fault injection")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a new seed, printed)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder for everything (default: a temp one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (kept anyway on failure)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file too")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be > 0 s, got {args.duration:g}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)

    from bliss_sampletrack.testbed.session import import_bliss

    import_bliss()  # gevent monkey-patching first, before anything opens a socket
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sampletrack-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "soak.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    for name in ("soak", "bliss_sampletrack"):
        logging.getLogger(name).setLevel(logging.INFO)

    soak = Soak(args, workdir)
    soak.say(f"soak: seed {args.seed}, {args.duration:g} s of faults, work folder {workdir}")
    result: Result | None = None
    try:
        soak.setup()
        soak.run()
        result = soak.finish()
    except SoakError as exc:
        print(f"soak: could not run: {exc}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - any failure to set up or run: shown, exit status 2
        traceback.print_exc()
        print("soak: could not run (see the traceback above)", file=sys.stderr)
    finally:
        soak.teardown()
    if result is None:
        print(f"soak: work folder kept: {workdir}", file=sys.stderr)
        return 2
    print(summary(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2, default=str))
    if args.keep or args.workdir is not None or not result.ok:
        print(f"work folder kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
