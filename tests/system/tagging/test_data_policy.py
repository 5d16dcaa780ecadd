"""The ESRF data policy adapter (bliss_sampletrack.tagging.data_policy) in the real BLISS session.

Each test switches the shared session to the ESRF policy through ``policy_enabled`` and puts it
back at teardown (basic scan saving, same base_path, in-memory config as before), so the other
test modules still see a session without data policy. Data goes under this module's tmp folder.
All tests share one proposal (on BLISS 2.0.3 leaving a proposal that has saved datasets waits
10 s for ICAT confirmations); each test gets a collection of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from esrf_policy import PROPOSAL, policy_roots

from bliss_sampletrack.errors import ConfigurationError, SampleTrackError
from bliss_sampletrack.tagging import data_policy
from bliss_sampletrack.tagging.icat_fields import ICAT_SAMPLE_FIELDS
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testing import last_scan_info

pytestmark = pytest.mark.bliss

FIELDS = {
    "Sample_name": "lysozyme-A1",
    "SampleChanger_name": "demo_changer",
    "SampleChanger_position": "3",
    "SampleTrackingParcel_id": "P-17",
    "SampleTrackingParcel_name": "parcel seventeen",
    "SampleTrackingContainer_id": "PUCK-042",
    "SampleTrackingContainer_name": "puck 42",
    "SampleTrackingContainer_position": "7",
}


def supported(session: Any) -> dict[str, str]:
    """The FIELDS this stack's ICAT definitions accept (all on 2.4; Sample_name on 2.0.3)."""
    names = data_policy.supported_sample_fields(session)
    return {key: value for key, value in FIELDS.items() if key in names}


def _loopscan(session: Any) -> Any:
    from bliss.common.scans import loopscan

    return loopscan(3, 0.01, session.env_dict["diode"], save=True)


def test_no_policy_in_the_default_session(bliss_session: Any, scan_saving: Any) -> None:
    assert not data_policy.policy_active(bliss_session)
    assert not data_policy.policy_active(None)
    assert data_policy.proposal_name(bliss_session) is None
    assert data_policy.dataset_name(bliss_session) is None
    with pytest.raises(SampleTrackError, match="not enabled"):
        data_policy.set_dataset_fields(bliss_session, {"Sample_name": "x"})
    with pytest.raises(SampleTrackError, match="not enabled"):
        data_policy.new_dataset(bliss_session)
    scan = _loopscan(bliss_session)
    assert data_policy.SNAPSHOT_KEY not in scan.scan_info
    assert data_policy.snapshot_fields(scan.scan_info) == {}


def test_the_current_session_proxy_outside_a_session_means_no_policy(bliss_session: Any, esrf: Any) -> None:
    """``bliss.current_session`` is a proxy: outside a session it is not None, yet proxies None."""
    from bliss import current_session
    from bliss.common.proxy import Proxy

    assert data_policy.current_session() is bliss_session  # unwrapped, in this session
    assert data_policy.real_session(current_session) is bliss_session
    assert data_policy.proposal_name(current_session) == PROPOSAL  # the proxy is accepted
    nobody = Proxy(lambda: None)  # what bliss.current_session is in a process without a session
    assert nobody is not None and data_policy.real_session(nobody) is None
    assert not data_policy.policy_active(nobody)
    assert data_policy.proposal_name(nobody) is None and data_policy.dataset_name(nobody) is None
    with pytest.raises(SampleTrackError, match="no BLISS session"):
        data_policy.set_dataset_fields(nobody, {"Sample_name": "x"})


def test_sample_fields_reach_the_scan_and_redis(
    beacon: BeaconServer, bliss_session: Any, esrf: Any, policy_root: Path
) -> None:
    assert data_policy.policy_active(bliss_session)
    assert data_policy.proposal_name(bliss_session) == PROPOSAL
    dataset = data_policy.dataset_name(bliss_session)
    assert dataset == "0001"

    data_policy.set_dataset_fields(bliss_session, FIELDS)
    expected = supported(bliss_session)
    assert "Sample_name" in expected
    assert (
        data_policy.snapshot_fields(
            {data_policy.SNAPSHOT_KEY: data_policy.dataset_fields(bliss_session)}, ICAT_SAMPLE_FIELDS
        )
        == expected
    )
    scan = _loopscan(bliss_session)

    assert data_policy.snapshot_fields(scan.scan_info, ICAT_SAMPLE_FIELDS) == expected
    assert "startDate" in data_policy.snapshot_fields(scan.scan_info)  # BLISS's own fields are kept
    info = last_scan_info(beacon.redis_data_url)
    assert info["data_policy"] == "ESRF"
    assert data_policy.snapshot_fields(info, ICAT_SAMPLE_FIELDS) == expected
    filename = Path(scan.scan_info["filename"])
    assert filename.is_relative_to(policy_root / "visitor" / PROPOSAL / "demo")
    assert filename.parent.name == f"{esrf.collection_name}_{dataset}"
    assert filename.is_file()


def test_a_removed_field_is_gone_from_the_next_scan(
    beacon: BeaconServer, bliss_session: Any, esrf: Any
) -> None:
    data_policy.set_dataset_fields(bliss_session, FIELDS)
    changer_known = "SampleChanger_position" in supported(bliss_session)
    first = data_policy.snapshot_fields(_loopscan(bliss_session).scan_info)
    assert first["Sample_name"] == "lysozyme-A1"
    assert first.get("SampleChanger_position") == ("3" if changer_known else None)

    data_policy.set_dataset_fields(bliss_session, {"SampleChanger_position": None, "Sample_name": None})
    data_policy.set_dataset_fields(bliss_session, {"SampleTrackingParcel_id": None})  # twice: no error
    data_policy.set_dataset_fields(bliss_session, {"SampleTrackingParcel_id": None})
    _loopscan(bliss_session)
    second = data_policy.snapshot_fields(last_scan_info(beacon.redis_data_url))
    assert "SampleChanger_position" not in second
    assert "SampleTrackingParcel_id" not in second
    assert second.get("SampleChanger_name") == ("demo_changer" if changer_known else None)
    # the dataset's own Sample_name is gone: the collection's (its name) shows through
    assert second["Sample_name"] == esrf.collection_name


def test_a_new_dataset_has_a_new_name_and_none_of_the_old_fields(bliss_session: Any, esrf: Any) -> None:
    data_policy.set_dataset_fields(bliss_session, FIELDS)
    old = data_policy.dataset_name(bliss_session)
    old_dataset = esrf.dataset
    before = _loopscan(bliss_session)

    new = data_policy.new_dataset(bliss_session)
    assert new != old
    assert data_policy.dataset_name(bliss_session) == new
    # the old dataset is closed, its fields frozen
    assert old_dataset.is_closed
    frozen = old_dataset.get_current_icat_metadata()
    expected = supported(bliss_session)
    assert {key: frozen[key] for key in FIELDS if key in frozen} == expected
    assert "endDate" in frozen
    current = data_policy.dataset_fields(bliss_session)
    assert not set(current) & (set(ICAT_SAMPLE_FIELDS) - {"Sample_name"})
    assert current["Sample_name"] == esrf.collection_name
    after = _loopscan(bliss_session)
    assert data_policy.snapshot_fields(before.scan_info, ICAT_SAMPLE_FIELDS) == expected
    assert data_policy.snapshot_fields(after.scan_info, ICAT_SAMPLE_FIELDS) == {
        "Sample_name": esrf.collection_name
    }

    assert data_policy.new_dataset(bliss_session, "mounted") == "mounted"
    data_policy.set_dataset_fields(bliss_session, {"Sample_name": "kept"})
    # no scan saved in it: BLISS does not close it, and its name is still free: same dataset again
    assert data_policy.new_dataset(bliss_session, "mounted") == "mounted"
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == "kept"
    numbered = data_policy.new_dataset(bliss_session)
    assert numbered == "0003"  # 0001 and 0002 have data on disk
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == esrf.collection_name
    assert data_policy.new_dataset(bliss_session) == numbered


def test_unknown_field_is_a_clear_error_and_changes_nothing(bliss_session: Any, esrf: Any) -> None:
    with pytest.raises(ConfigurationError, match="'SampleChanger_colour'") as caught:
        data_policy.set_dataset_fields(bliss_session, {"Sample_name": "x", "SampleChanger_colour": "red"})
    assert isinstance(caught.value, ValueError)
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == esrf.collection_name
    with pytest.raises(TypeError, match="SampleChanger_position"):
        data_policy.set_dataset_fields(bliss_session, {"SampleChanger_position": 3})  # type: ignore[dict-item]
    # a field of BLISS's own ICAT definitions is accepted too
    data_policy.set_dataset_fields(bliss_session, {"Sample_description": "a test sample"})
    assert data_policy.dataset_fields(bliss_session)["Sample_description"] == "a test sample"


def test_sample_name_is_shared_with_newdataset_and_the_collection(bliss_session: Any, esrf: Any) -> None:
    esrf.newdataset("sampled", sample_name="from-newdataset")
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == "from-newdataset"
    data_policy.set_dataset_fields(bliss_session, {"Sample_name": "from-tracker"})  # same field
    assert esrf.dataset.sample_name == "from-tracker"
    data_policy.set_dataset_fields(bliss_session, {"Sample_name": None})
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == esrf.collection_name
    esrf.collection.sample_name = "from-collection"
    assert data_policy.dataset_fields(bliss_session)["Sample_name"] == "from-collection"


def test_policy_enabled_puts_the_session_back(bliss_session: Any, policy_root: Path) -> None:
    from bliss.config.static import get_config

    root = get_config().root
    base_path = bliss_session.scan_saving.base_path
    writer = bliss_session.scan_saving.writer
    root["icat_servers"]["disable"] = False  # as if ICAT were configured
    try:
        with data_policy.policy_enabled(bliss_session, **policy_roots(policy_root)) as scan_saving:
            assert data_policy.policy_active(bliss_session)
            assert root["icat_servers"]["disable"] is True  # headless whatever the config says
            assert root["scan_saving"]["visitor_data_root"] == str(policy_root / "visitor")
            assert scan_saving.writer == data_policy.HEADLESS_WRITER
        assert not data_policy.policy_active(bliss_session)
        assert root["icat_servers"]["disable"] is False
    finally:
        root["icat_servers"]["disable"] = True
    assert "visitor_data_root" not in root["scan_saving"]
    assert root["scan_saving"]["beamline"] == "demo"
    assert bliss_session.scan_saving.base_path == base_path
    assert bliss_session.scan_saving.writer == writer
    with pytest.raises(ConfigurationError, match="data_rooot"):
        data_policy.enable_policy(bliss_session, data_rooot=policy_root)
    assert not data_policy.policy_active(bliss_session)


def test_fields_the_icat_definitions_lack_are_said_once_and_never_warned_per_scan(
    bliss_session: Any, esrf: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """ICAT field hygiene: only the fields this BLISS's definitions accept are set; the others are
    named in one warning per session (pyicat-plus 0.1.10 on 2.0.3 lacks SampleChanger_* and
    SampleTracking*), and no scan logs "not a valid ICAT field"."""
    names = data_policy.supported_sample_fields(bliss_session)
    lacking = [name for name in ICAT_SAMPLE_FIELDS if name not in names]
    caplog.set_level(logging.WARNING)
    data_policy._SUPPORTED.pop(bliss_session.name, None)  # as at the session's first dataset
    for _ in range(3):
        data_policy.set_dataset_fields(bliss_session, FIELDS)
        _loopscan(bliss_session)
    said = [r for r in caplog.records if "have no field" in r.getMessage()]
    if lacking:
        assert len(said) == 1 and all(name in said[0].getMessage() for name in lacking)
        assert "sample tag" in said[0].getMessage()
    else:
        assert said == []
    assert not [r for r in caplog.records if "not a valid ICAT field" in r.getMessage()]
    assert set(data_policy.dataset_fields(bliss_session)) & set(ICAT_SAMPLE_FIELDS) == set(names)
