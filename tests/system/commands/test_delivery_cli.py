"""``sampletrack deliver`` and ``sampletrack status`` as separate processes against the beacon."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from recorder import Recorder

from bliss_sampletrack.testbed.beacon import BeaconServer

pytestmark = pytest.mark.bliss
TOKEN_ENV = "ST_TEST_TOKEN"
TOKEN = "cli-test-token-9f8e7d"
SAMPLETRACK = str(Path(sys.executable).parent / "sampletrack")


@pytest.fixture
def cli_tracker(
    add_yaml: Callable[[str], Any], http_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from bliss.config.conductor.client import get_redis_proxy

    url, _ = http_server
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    redis = get_redis_proxy()
    for key in [*redis.scan_iter("sampletrack:cli_tracker:*"), *redis.scan_iter("sampletrack:outbox:cli00*")]:
        redis.delete(key)
    config = add_yaml(
        f"""
        - name: cli_tracker
          plugin: bliss
          package: bliss_sampletrack.tracker.controller
          class: SampleTracker
          beamline: cli00
          tag_scans: false
          deliver_in_session: false     # the daemon delivers
          delivery:
            - name: svc
              type: rest
              url: {url}
              token_env: {TOKEN_ENV}
        """
    )
    tracker = config.get("cli_tracker")
    yield tracker
    tracker.close()


def run_cli(beacon: BeaconServer, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token:
        env[TOKEN_ENV] = TOKEN
    command = [SAMPLETRACK, *args, "--beacon", beacon.host, "--tracker", "cli_tracker"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_deliver_drains_in_order_and_status_reports(
    cli_tracker: Any, beacon: BeaconServer, http_server: tuple[str, Recorder]
) -> None:
    _, recorder = http_server
    cli_tracker.mount(name="crystal A")
    cli_tracker.mount(name="crystal B")
    cli_tracker.unmount()
    recorded = cli_tracker.outbox.peek(10)
    assert len(recorded) == 4
    status = run_cli(beacon, "status")
    assert status.returncode == 0, status.stderr
    assert "EMPTY" in status.stdout and "4 pending" in status.stdout
    # status is a read: the same report with no secret in the environment at all
    unsecret = run_cli(beacon, "status", token=False)
    assert unsecret.returncode == 0, unsecret.stderr

    def timeless(text: str) -> str:
        return re.sub(r"\d+ s\b", "N s", text)

    assert timeless(unsecret.stdout) == timeless(status.stdout)
    assert TOKEN not in unsecret.stdout + unsecret.stderr and "svc: REST http://" in unsecret.stdout
    assert run_cli(beacon, "deliver", "--drain", token=False).returncode != 0  # delivering needs it
    recorder.answers = [(503, {}, {"error": {"code": "down", "message": "maintenance", "fields": {}}})]
    result = run_cli(beacon, "deliver", "--drain", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4" in result.stdout and "0 pending" in result.stdout
    assert len(recorder.requests) == 2  # the 503, then the same batch again
    first, second = (body["events"] for _, _, body in recorder.requests)
    assert first == second == [json.loads(e.to_json()) for e in recorded]
    assert [(e["type"], e["sample"]["name"]) for e in second] == [
        ("mounted", "crystal A"),
        ("unmounted", "crystal A"),
        ("mounted", "crystal B"),
        ("unmounted", "crystal B"),
    ]
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for _, h, _ in recorder.requests)
    assert TOKEN not in result.stdout + result.stderr


def test_status_names_the_session_that_owns_the_tracker(cli_tracker: Any, beacon: BeaconServer) -> None:
    status = run_cli(beacon, "status")
    assert "owner: nobody (the next change in a BLISS session takes it)" in status.stdout, status.stderr
    cli_tracker.mount(name="crystal E")  # this process's session now owns it
    status = run_cli(beacon, "status")
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if line.startswith("owner: ")]
    assert line.startswith(
        f"owner: session 'demo_session' on host {socket.gethostname()} (pid {os.getpid()}, since "
    )
    assert re.search(r", claim expires in \d+ s unless renewed$", line), line
    cli_tracker.close()  # gives the claim up
    assert "owner: nobody" in run_cli(beacon, "status").stdout


def test_dead_letters_are_shown_and_retried(
    cli_tracker: Any, beacon: BeaconServer, http_server: tuple[str, Recorder]
) -> None:
    _, recorder = http_server
    cli_tracker.mount(name="crystal C")
    recorder.answers = [
        (422, {}, {"error": {"code": "invalid", "message": "no", "fields": {"sample.name": "bad"}}})
    ]
    result = run_cli(beacon, "deliver", "--drain", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    status = run_cli(beacon, "status")
    assert "1 dead letter(s)" in status.stdout and "422" in status.stdout
    retried = run_cli(beacon, "deliver", "--retry-dead-letters")
    assert "svc: 1 delivered, 0 still dead" in retried.stdout
    assert "0 dead letter(s)" in run_cli(beacon, "status").stdout


def test_status_lists_the_write_back_outbox_and_its_dead_letters(
    cli_tracker: Any, beacon: BeaconServer
) -> None:
    """An inventory's write-backs (delivery/writeback.py) are a second outbox: status shows it, with
    no client built (the write-back client's name comes from Redis)."""
    from datetime import UTC, datetime

    from bliss.config.conductor.client import get_redis_proxy

    from bliss_sampletrack.delivery.manager import writeback_outbox
    from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
    from bliss_sampletrack.delivery.writeback import Kind, WriteBack

    redis = get_redis_proxy()
    box = writeback_outbox(RedisStreamOutbox(redis, "cli00"))
    for key in redis.scan_iter(f"{box.key}*"):
        redis.delete(key)
    box.register("icat")
    now = datetime.now(UTC)
    records = [
        WriteBack(Kind.PARCEL_EMPTIED, "cli00", "cli_tracker", "sc", now, "p-1", "Dewar-1"),
        WriteBack(Kind.PARCEL_EMPTIED, "cli00", "cli_tracker", "sc", now, "p-2", "Dewar-2"),
    ]
    pipeline = redis.pipeline()
    box.add(pipeline, records)
    pipeline.execute()
    [first, _] = box.next_entries("icat", 2)
    box.dead_letter("icat", first, "parcel Dewar-1 status GONE refused: 400 'GONE' is not a status")
    try:
        status = run_cli(beacon, "status", token=False)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        [line] = [line for line in lines if "ICAT+ write-back" in line]
        assert line.startswith("delivery: icat: ICAT+ write-back: 1 pending") and "1 dead letter(s)" in line
        dead = lines[lines.index(line) + 1]
        assert dead == (
            f"  dead letter {records[0].event_id} (parcel Dewar-1): parcel Dewar-1 status GONE refused: "
            "400 'GONE' is not a status"
        )
    finally:
        for key in redis.scan_iter(f"{box.key}*"):
            redis.delete(key)


def test_deliver_without_beacon_is_a_clear_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BEACON_HOST"}
    result = subprocess.run(
        [SAMPLETRACK, "deliver", "--drain"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "give --beacon HOST:PORT" in result.stderr


def test_the_session_delivers_in_the_background_and_shows_it(
    add_yaml: Callable[[str], Any], http_server: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gevent

    url, recorder = http_server
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = add_yaml(
        f"""
        - name: bg_tracker
          plugin: bliss
          package: bliss_sampletrack.tracker.controller
          class: SampleTracker
          beamline: bg00
          tag_scans: false
          delivery:
            - {{name: svc, type: rest, url: "{url}", token_env: {TOKEN_ENV}}}
            - {{name: nowhere, type: none}}
        """
    )
    tracker = config.get("bg_tracker")
    try:
        recorder.answers = [(500, {}, {"error": {"code": "boom", "message": "", "fields": {}}})]
        tracker.mount(name="crystal D")
        with gevent.Timeout(15):
            while tracker.outbox.pending("svc"):
                gevent.sleep(0.05)
        assert [body["sample"]["name"] for _, _, body in recorder.requests] == ["crystal D", "crystal D"]
        info = tracker.__info__()
        assert "svc: REST" in info and "0 pending" in info and "nowhere: no tracking service" in info
        assert TOKEN not in info
    finally:
        tracker.close()
