"""Delivery to the real tracking service over HTTP on loopback: outages, rejections, kill -9 of
the delivering process, and two deliverers at once. The outbox is in the test bed's real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
from outboxes import events as numbered_events
from outboxes import fill
from service_fixtures import HELPERS, issue_token, start_service

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.clients import RestClient
from bliss_sampletrack.delivery.loop import Backoff, Deliverer
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.testbed.beacon import BeaconServer, free_port
from bliss_sampletrack.testing import wait_for

pytestmark = pytest.mark.bliss
SCRIPT = str(HELPERS / "deliverer_process.py")


def events(n: int, beamline: str) -> list[Event]:
    return numbered_events(n, beamline, prefix="D")


T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def stored(service_url: str, token: str, beamline: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"beamline": beamline, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        answer = requests.get(
            f"{service_url}/events", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        answer.raise_for_status()
        body = answer.json()
        out += body["events"]
        cursor = body["next_cursor"]
        if not cursor:
            return out


def test_service_down_then_up_all_delivered_in_order_once(outbox: RedisStreamOutbox, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    token = issue_token(db, [outbox.beamline])
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    fill(outbox, events(120, outbox.beamline))
    deliverer = Deliverer(outbox, RestClient("service", url, token, max_batch=25), backoff=Backoff(0.05, 0.3))
    runner = gevent.spawn(deliverer.run)
    try:
        wait_for(lambda: outbox.last_error("service") is not None, 10, "a connection error")
        assert outbox.pending("service") == 120
        service = start_service(db, tmp_path, "--port", str(port))
        try:
            wait_for(lambda: outbox.pending("service") == 0, 30, "the outbox to drain")
            got = stored(service.base_url, token, outbox.beamline)
        finally:
            service.stop()
    finally:
        deliverer.stop()
        runner.join(5)
    assert [e["sample"]["barcode"] for e in got] == [f"D-{i:04d}" for i in range(120)]
    assert outbox.last_error("service") is None and outbox.dead_letters("service") == []


def test_refusal_is_dead_lettered_and_retried_after_the_fix(
    outbox: RedisStreamOutbox, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    wrong = issue_token(db, ["elsewhere"])  # a token for another beamline: 403
    right = issue_token(db, [outbox.beamline])
    service = start_service(db, tmp_path)
    try:
        fill(outbox, events(3, outbox.beamline))
        deliverer = Deliverer(
            outbox, RestClient("service", service.base_url, wrong), backoff=Backoff(0.05, 0.3)
        )
        while deliverer.step():
            pass
        letters = outbox.dead_letters("service")
        assert len(letters) == 3 and all("403" in letter.answer for letter in letters)
        assert outbox.pending("service") == 0  # refusals never block later events
        fixed = Deliverer(outbox, RestClient("service", service.base_url, right), backoff=Backoff(0.05, 0.3))
        assert fixed.retry_dead_letters() == (3, 0)
        assert [e["sample"]["barcode"] for e in stored(service.base_url, right, outbox.beamline)] == [
            "D-0000",
            "D-0001",
            "D-0002",
        ]
    finally:
        service.stop()


def _deliverer_process(
    beacon: BeaconServer, outbox: RedisStreamOutbox, url: str, token: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ST_TOKEN": token, "ST_BATCH": "20"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, SCRIPT, beacon.redis_url, outbox.beamline, url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_mid_delivery_then_restart_loses_and_duplicates_nothing(
    outbox: RedisStreamOutbox, beacon: BeaconServer, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    token = issue_token(db, [outbox.beamline])
    service = start_service(db, tmp_path)
    total = 3000
    fill(outbox, events(total, outbox.beamline))
    first = _deliverer_process(beacon, outbox, service.base_url, token, tmp_path / "deliverer.log")
    try:
        wait_for(lambda: outbox.pending("service") < total - 100, 60, "the first deliveries")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        left = outbox.pending("service")
        assert 0 < left < total, "killed too late to be mid-delivery"
        second = _deliverer_process(beacon, outbox, service.base_url, token, tmp_path / "deliverer.log")
        try:
            # the killed holder's lease expires (1.5 s) before the new process takes over
            wait_for(lambda: outbox.pending("service") == 0, 60, "the restarted deliverer to drain")
        finally:
            second.kill()
            second.wait(10)
        got = stored(service.base_url, token, outbox.beamline)
    finally:
        service.stop()
    barcodes = [e["sample"]["barcode"] for e in got]
    assert barcodes == [f"D-{i:04d}" for i in range(total)]  # all, once, in order


def test_two_deliverers_started_at_once_never_double_deliver(
    outbox: RedisStreamOutbox, beacon: BeaconServer, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    token = issue_token(db, [outbox.beamline])
    service = start_service(db, tmp_path)
    total = 1000
    fill(outbox, events(total, outbox.beamline))
    log = tmp_path / "deliverers.log"
    pair = [_deliverer_process(beacon, outbox, service.base_url, token, log) for _ in range(2)]
    holders: set[bytes] = set()
    lock_key = f"{outbox.key}:lock:service"

    def drained() -> bool:
        holder = outbox.redis.get(lock_key)
        if holder is not None:
            holders.add(holder)
        return outbox.pending("service") == 0

    try:
        wait_for(drained, 60, "the outbox to drain")
    finally:
        for process in pair:
            process.kill()
            process.wait(10)
    got = stored(service.base_url, token, outbox.beamline)
    service.stop()
    assert [e["sample"]["barcode"] for e in got] == [f"D-{i:04d}" for i in range(total)]
    assert len(holders) == 1  # one process held the lock throughout; the other only waited
