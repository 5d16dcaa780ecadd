"""The test bed itself: beacon starts on free loopback ports and stops exactly what it started."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from bliss_sampletrack.testbed.beacon import BeaconServer, start_beacon
from bliss_sampletrack.testbed.redis_stack import redis_module_names

pytestmark = pytest.mark.bliss


def _group_members(pgid: int) -> set[int]:
    """Live processes of a process group (zombies, dead but not yet reaped by init, excluded)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # fields after "(comm)": state, ppid, pgrp
            state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                members.add(int(entry.name))
    return members


def test_a_second_beacon_stops_exactly_its_own_processes(beacon: BeaconServer, tmp_path: Path) -> None:
    other = start_beacon(tmp_path / "other")
    try:
        assert (
            len(
                {other.port, other.redis_port, other.redis_data_port}
                & {beacon.port, beacon.redis_port, beacon.redis_data_port}
            )
            == 0
        )
        members = _group_members(other.process.pid)
        # beacon itself, its two redis-server and blissdata's memory tracker
        assert len(members) >= 3, members
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in members]
        assert sum(c.startswith(b"redis-server") for c in commands) == 2, commands
        client = redis.Redis.from_url(other.redis_data_url)
        try:
            assert {"ReJSON", "search"} <= redis_module_names(client)
        finally:
            client.close()
    finally:
        other.stop()
    assert _group_members(other.process.pid) == set()
    # the run's own beacon is untouched
    assert beacon.process.poll() is None
    assert redis.Redis.from_url(beacon.redis_data_url).ping()


def test_redis_listens_on_loopback_only(beacon: BeaconServer) -> None:
    client = redis.Redis.from_url(beacon.redis_data_url)
    try:
        bind = client.config_get("bind")["bind"]
        save = client.config_get("save")["save"]
    finally:
        client.close()
    assert bind.split() == ["127.0.0.1"]
    assert save == ""
