"""A real BLISS session whose tracker resolves barcodes through ICAT+ parcels (a loopback ICAT+).

Under the ESRF data policy (proposal ``st0001``), a mount by barcode fills the scan tag and the
ICAT dataset fields (``SampleTrackingParcel_*``, ``SampleTrackingContainer_*``) from a parcel; with
ICAT+ gone, the cache still answers, the tracker warns, ``__info__`` and the scan tag say the record
may be stale (never the event). The tracker's ``registries:`` key, from beacon YAML too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from test_icatplus_registry import API_KEY, PARCEL_A, SESSION_ID, IcatPlus

from bliss_sampletrack.core import Event
from bliss_sampletrack.errors import ConfigurationError, SampleTrackError
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testing import icat_fields_as_set
from bliss_sampletrack.tracker import controller
from bliss_sampletrack.tracker.icatplus import KEY_PREFIX

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
    expected = {
        "SampleTrackingParcel_id": PARCEL_A,
        "SampleTrackingParcel_name": "Dewar-MX2532",
        "SampleTrackingContainer_name": "puck-7",
        "SampleTrackingContainer_position": "5",
    }
    assert {key: icat[key] for key in expected if key in icat} == icat_fields_as_set(bliss_session, expected)
    info = icat_tracker.__info__().splitlines()
    registries = [line for line in info if line.startswith("  registry  : ")]
    assert len(registries) == 2 and "manifest beacon:sampletrack/samples.csv" in registries[0]
    assert "ICAT+ http://127.0.0.1" in registries[1] and "proposal st0001" in registries[1]
    assert "s ago" in registries[1] and "may be stale" not in registries[1]
    assert info[info.index(registries[1]) + 1] == "  unknown   : barcodes in no registry: accept"
    # the manifest still answers for its own barcodes (first in the chain)
    assert icat_tracker.mount("LYS-0001").parcel_name == "Dewar A"

    # ICAT+ goes away: an on-demand refresh fails, the expired cache answers and says it may be stale
    server.stop(timeout=1)
    with pytest.raises(SampleTrackError, match="ICAT"):
        icat_tracker.refresh_registry()
    gevent.sleep(CACHE_TTL + 0.2)
    stale = icat_tracker.mount("THA-0007")
    assert stale.parcel_id == PARCEL_A and stale.container_position == "6"
    assert "may be stale" in str(stale.registry_note)
    assert icat_tracker.warnings[-1].startswith("barcode 'THA-0007': from the ICAT+ cache of")
    assert "may be stale" in icat_tracker.__info__()
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    assert data_policy.snapshot_fields(scan.scan_info).get("SampleTrackingContainer_position") == (
        icat_fields_as_set(bliss_session, {"SampleTrackingContainer_position": "6"}).get(
            "SampleTrackingContainer_position"
        )
    )
    assert scan.scan_info["sample"]["container_position"] == "6"  # the tag has it on every stack
    assert "may be stale" in scan.scan_info["sample"]["registry_note"]
    # the note is kept in the state in Redis (a restarted session still knows), never in events
    _, restored = icat_tracker.store.read()
    assert restored is not None and restored.sample is not None
    assert restored.sample.registry_note == stale.registry_note
    event = icat_tracker.outbox.peek(10)[-1]
    assert event.sample.barcode == "THA-0007" and "registry_note" not in event.to_json()
    assert "may be stale" not in event.to_json() and Event.from_json(event.to_json()) == event
    warnings = len(icat_tracker.warnings)
    icat_tracker.mount("THA-0007")  # read again: the same stale record, warned about once
    assert len(icat_tracker.warnings) == warnings


def test_registries_from_beacon_yaml_in_chain_order(
    add_yaml: Callable[[str], Any], icat_site: tuple[str, IcatPlus, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key as beacon gives it (a ConfigList of ConfigNodes); no data policy, so no proposal."""
    monkeypatch.setenv("ICATPLUS_SESSION_ID", SESSION_ID)
    monkeypatch.setenv("ICATPLUS_API_KEY", API_KEY)
    url, app, _ = icat_site
    config = add_yaml(
        f"""
        - name: yaml_tracker
          plugin: bliss
          package: bliss_sampletrack.tracker.controller
          class: SampleTracker
          beamline: id00
          tag_scans: false
          deliver_in_session: false
          registries:
            - type: manifest
              path: sampletrack/samples.csv
            - type: icatplus
              name: parcels
              url: {url}
              timeout: 2
              barcode_fields: [name, id]  # a ConfigList too
        """
    )
    tracker = config.get("yaml_tracker")
    try:
        kinds = [type(member).__name__ for member in tracker.registry.registries]
        assert kinds == ["ManifestRegistry", "IcatPlusRegistry"]
        assert tracker.registry.registries[1].barcode_fields == ("name", "id")
        info = tracker.__info__()
        assert "registry  : manifest beacon:sampletrack/samples.csv (3 samples)" in info
        assert f"registry  : ICAT+ {url} (no proposal: the ESRF data policy is off)" in info
        assert tracker.resolve("LYS-0001").name == "lysozyme_1"  # the manifest answers first
        assert tracker.resolve("LYS-0042").parcel_id is None  # ICAT+ has no proposal: unknown
        assert "in no sample registry" in tracker.warnings[-1]
        with pytest.raises(SampleTrackError, match="no proposal"):
            tracker.refresh_registry()
        gevent.sleep(0.2)  # the prefetch greenlet has run: without a proposal, it asks nothing
        assert app.requests == []
    finally:
        tracker.close()


BAD_REGISTRIES = [
    (["registries: [{type: manifest, path: sampletrack/samples.csv}]", "manifest: x.csv"],
     "key 'manifest' and 'registries' are both given"),
    (["registries: {type: manifest, path: sampletrack/samples.csv}"],
     "key 'registries' must be a list"),
    (["registries: [{type: ispyb}]"],
     "key 'registries' item 1: 'type' must be manifest or icatplus, got 'ispyb'"),
    (["registries: [{type: manifest, file: a.csv}]"],
     "key 'registries' item 1: a manifest takes 'path' only"),
    (["registries: [{type: manifest, path: nowhere/none.csv}]"],
     "key 'registries' item 1: 'path' names 'nowhere/none.csv', which beacon cannot serve"),
    (["registries: [{type: icatplus, url: ftp://x}]"],
     "key 'registries' item 1: registry 'icatplus': key 'url'"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "message"), BAD_REGISTRIES)
def test_registries_errors_name_the_key_and_the_item(
    add_yaml: Callable[[str], Any], lines: list[str], message: str
) -> None:
    head = [
        "- name: bad_tracker",
        "  plugin: bliss",
        "  package: bliss_sampletrack.tracker.controller",
        "  class: SampleTracker",
        "  beamline: id00",
    ]
    config = add_yaml("\n".join(head + [f"  {line}" for line in lines]) + "\n")
    from bliss.config.static import ObjectCreationFailed

    with pytest.raises(ObjectCreationFailed) as raised:  # BLISS wraps the object's error
        config.get("bad_tracker")
    error = raised.value.__cause__
    assert isinstance(error, ConfigurationError), repr(error)
    assert message in str(error) and "'bad_tracker' in tests/" in str(error)
