"""A real loopscan in a real BLISS session, read back from Redis (blissdata) and HDF5 (h5py).

Also checks the path every later sample tag takes: a user scan-metadata category "sample" with
``@NX_class: NXsample`` lands in ``scan_info["sample"]`` and in the file's ``/<n>.1/sample``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest

from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testing import as_text, last_scan_info

pytestmark = pytest.mark.bliss


@pytest.fixture
def sample_category() -> Iterator[Any]:
    from bliss.scanning.scan_meta import ScanMeta, get_user_scan_meta

    added = "sample" not in ScanMeta.categories_names()
    if added:
        ScanMeta.add_categories(["sample"])
    meta = get_user_scan_meta()
    try:
        yield meta.sample
    finally:
        # not meta.sample.remove(): in BLISS 2.0.3 removing a category's last entry raises
        # AttributeError ('_ScanMetaCategory' has no 'category') after removing it
        meta.sample.metadata.pop("testbed", None)
        if added:
            ScanMeta.remove_categories(["sample"])


def test_loopscan_is_in_redis_and_in_its_hdf5_file(
    beacon: BeaconServer, bliss_session: Any, scan_saving: Any, sample_category: Any
) -> None:
    from bliss.common.scans import loopscan

    calls: list[str] = []

    def tag(scan: Any) -> dict[str, str]:
        calls.append(scan.name)
        return {"@NX_class": "NXsample", "name": "testbed-sample", "barcode": "TB-0001"}

    sample_category.set("testbed", tag)
    diode = bliss_session.env_dict["diode"]
    scan = loopscan(7, 0.01, diode, save=True)

    filename = Path(scan.scan_info["filename"])
    assert filename.is_relative_to(Path(scan_saving.base_path))
    assert calls, "the metadata callable was never called"

    info = last_scan_info(beacon.redis_data_url)
    assert info["scan_nb"] == 1  # a fresh saving path per test
    assert info["npoints"] == 7
    assert info["session_name"] == "demo_session"
    assert info["filename"] == str(filename)
    assert info["sample"]["name"] == "testbed-sample"
    assert info["sample"]["@NX_class"] == "NXsample"

    with h5py.File(filename, "r", locking=False) as h5:
        entry = h5["1.1"]
        assert as_text(entry["title"][()]).startswith("loopscan 7")
        data = entry["measurement/diode"][()]
        assert data.shape == (7,)
        sample = entry["sample"]
        assert as_text(sample.attrs["NX_class"]) == "NXsample"
        assert as_text(sample["name"][()]) == "testbed-sample"
        assert as_text(sample["barcode"][()]) == "TB-0001"


def test_each_test_gets_a_fresh_saving_path(bliss_session: Any, scan_saving: Any, tmp_path: Path) -> None:
    from bliss.common.scans import loopscan

    assert Path(scan_saving.base_path).is_relative_to(tmp_path)
    scan = loopscan(2, 0.0, bliss_session.env_dict["diode"], save=True)
    assert scan.scan_info["scan_nb"] == 1
    with h5py.File(scan.scan_info["filename"], "r", locking=False) as h5:
        assert list(h5) == ["1.1"]
        assert "sample" not in h5["1.1"]  # the previous test's metadata is gone
