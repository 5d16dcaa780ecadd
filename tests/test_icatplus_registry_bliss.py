"""A real BLISS session whose tracker resolves barcodes through ICAT+ parcels (a loopback ICAT+).

Under the ESRF data policy (proposal ``st0001``), a mount by barcode fills the scan tag and the
ICAT dataset fields (``SampleTrackingParcel_*``, ``SampleTrackingContainer_*``) from a parcel; with
ICAT+ gone, the cache still answers and ``__info__`` says the record may be stale.

Needs the tracker's ``registries:`` key (controller wiring of the ICAT+ registry): skipped, saying
so, while ``bliss_sampletrack.tracker.controller`` does not have it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import gevent
import pytest
from test_icatplus_registry import API_KEY, PARCEL_A, SESSION_ID, IcatPlus

from bliss_sampletrack.core import Sample
from bliss_sampletrack.errors import SampleTrackError
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.tracker import controller
from bliss_sampletrack.tracker.icatplus_registry import KEY_PREFIX

pytestmark = pytest.mark.bliss
CACHE_TTL = 1.0  # seconds: the test lets the cache expire once


@pytest.fixture
def icat_site() -> Iterator[tuple[str, IcatPlus, Any]]:
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    app = IcatPlus()
    app.investigations[("id00", "st0001")] = [
        {"id": 123, "name": "ST0001", "startDate": "2020-01-01T08:00:00"}
    ]
    # a pool, so that stop() also ends the kept-alive connections: ICAT+ is then really gone
    server = WSGIServer(("127.0.0.1", 0), app, log=None, spawn=Pool(8))
    server.start()
    yield f"http://127.0.0.1:{server.server_port}", app, server
    server.stop(timeout=1)


@pytest.fixture
def icat_tracker(
    bliss_session: Any, esrf: Any, icat_site: tuple[str, IcatPlus, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[controller.SampleTracker]:
    if "registries" not in controller.KEYS:
        pytest.skip(
            "the tracker has no 'registries:' key yet: the ICAT+ registry is not wired into "
            "SampleTracker (see the controller diff in the ICAT+ registry report)"
        )
    from bliss.config.conductor.client import get_redis_proxy
    from bliss.config.static import get_config

    monkeypatch.setenv("ICATPLUS_SESSION_ID", SESSION_ID)
    monkeypatch.setenv("ICATPLUS_API_KEY", API_KEY)
    redis = get_redis_proxy()
    for pattern in ("sampletrack:tracker:*", "sampletrack:outbox:*", f"{KEY_PREFIX}:id00:*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)
    node = get_config().get_config("tracker")
    config = {key: node.get(key) for key in node.keys() if key != "manifest"}
    config["deliver_in_session"] = False
    config["registries"] = [
        {"type": "manifest", "path": "sampletrack/samples.csv"},
        {"type": "icatplus", "url": icat_site[0], "timeout": 2, "cache_ttl": CACHE_TTL},
    ]
    tracker = controller.SampleTracker("tracker", config)
    tracker.reader.remove()  # type: ignore[union-attr]
    yield tracker
    tracker.close()


def test_a_mount_by_barcode_tags_the_scan_and_fills_the_icat_fields_from_a_parcel(
    icat_tracker: controller.SampleTracker,
    icat_site: tuple[str, IcatPlus, Any],
    bliss_session: Any,
    beacon: BeaconServer,
) -> None:
    from bliss.common.scans import loopscan

    from bliss_sampletrack.tagging import data_policy

    _, app, server = icat_site
    sample = icat_tracker.mount("LYS-0042")  # in no manifest: from the ICAT+ parcel
    assert (sample.parcel_id, sample.container_name, sample.container_position) == (PARCEL_A, "puck-7", "5")
    pair = [f"/dataacquisition/{API_KEY}/investigation", f"/tracking/{SESSION_ID}/parcel"]
    paths = [r.path for r in app.requests]  # the tracker's prefetch at construction and/or the mount
    assert paths[:2] == pair and set(paths) == set(pair)
    assert app.requests[0].query == {"instrumentName": "id00", "investigationName": "st0001"}
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    tag = scan.scan_info["sample"]
    assert (tag["barcode"], tag["parcel_name"], tag["container_id"]) == (
        "LYS-0042",
        "Dewar-MX2532",
        "c0000000000000000000007a",
    )
    assert tag["sample_id"] == "77001" and "registry_note" not in tag
    icat = data_policy.snapshot_fields(scan.scan_info)
    assert icat["Sample_name"] == "LYS-0042"
    assert (icat["SampleTrackingParcel_id"], icat["SampleTrackingParcel_name"]) == (PARCEL_A, "Dewar-MX2532")
    assert (icat["SampleTrackingContainer_name"], icat["SampleTrackingContainer_position"]) == ("puck-7", "5")
    assert "ICAT+ http://127.0.0.1" in icat_tracker.__info__() and "s ago" in icat_tracker.__info__()
    # the manifest still answers for its own barcodes (first in the chain)
    assert icat_tracker.mount("LYS-0001").parcel_name == "Dewar A"

    # ICAT+ goes away: an on-demand refresh fails, the expired cache answers and says it may be stale
    server.stop(timeout=1)
    with pytest.raises(SampleTrackError, match="ICAT"):
        icat_tracker.refresh_registry()
    gevent.sleep(CACHE_TTL + 0.2)
    stale = icat_tracker.mount("THA-0007")
    assert stale.parcel_id == PARCEL_A and stale.container_position == "6"
    assert "may be stale" in icat_tracker.__info__()
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    assert data_policy.snapshot_fields(scan.scan_info)["SampleTrackingContainer_position"] == "6"
    if "registry_note" in {f.name for f in fields(Sample)}:  # the proposed Sample field
        assert "may be stale" in scan.scan_info["sample"]["registry_note"]
