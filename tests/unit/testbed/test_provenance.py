"""The provenance soak (``tools/provenance.py``): its classifier on hand-made scans (the short
seeded run end to end is tests/system/testbed/test_provenance_soak.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bliss_sampletrack.testbed.provenance import (
    FALSE_EMPTY,
    FLAGGED_DOUBT,
    MISMATCH,
    OK,
    RAISED,
    SILENT,
    UNFLAGGED_CHANGE,
    WRONG,
    ScanEvidence,
    Timeline,
    classify,
    flag,
)


def mounted(barcode: str, *, name: str | None = None, changed: bool = False) -> dict[str, Any]:
    tag: dict[str, Any] = {"state": "MOUNTED", "barcode": barcode, "@changed_during_scan": changed}
    if name is not None:
        tag["name"] = name
    return tag


def empty(changed: bool = False) -> dict[str, Any]:
    return {"state": "EMPTY", "reason": "no sample mounted", "@changed_during_scan": changed}


SAME: Any = object()  # the HDF5 tag is the Redis tag


def evidence(window: set[str | None], tag: dict[str, Any] | None, h5: Any = SAME, **kw: Any) -> ScanEvidence:
    if h5 is SAME:
        h5 = None if tag is None else dict(tag)
    return ScanEvidence(
        window=frozenset(window), hw_changed=kw.pop("hw_changed", False), redis_tag=tag, h5_tag=h5, **kw
    )


# --- the classifier --------------------------------------------------------------------------------


def test_mounted_with_the_pin_on_the_goniometer_is_ok() -> None:
    assert classify(evidence({"LYS-0001"}, mounted("LYS-0001"))).classes == [OK]


def test_empty_when_the_goniometer_is_empty_is_ok() -> None:
    assert classify(evidence({None}, empty())).classes == [OK]


def test_either_state_of_a_change_in_the_start_window_is_ok() -> None:
    window = {None, "LYS-0001"}  # a load ended while the scan was starting
    assert classify(evidence(window, mounted("LYS-0001"))).classes == [OK]
    assert classify(evidence(window, empty())).classes == [OK]


def test_mounted_with_another_pin_is_wrong() -> None:
    verdict = classify(evidence({"LYS-0002"}, mounted("LYS-0001")))
    assert verdict.classes == [WRONG]
    assert verdict.bad == [WRONG]
    assert "LYS-0002" in verdict.notes[0]


def test_mounted_on_an_empty_goniometer_is_wrong() -> None:
    assert classify(evidence({None}, mounted("LYS-0001"))).classes == [WRONG]


def test_empty_with_a_pin_through_the_whole_window_is_false_empty() -> None:
    assert classify(evidence({"THA-0003"}, empty())).classes == [FALSE_EMPTY]
    # a pin without barcode on it is a pin too
    assert classify(evidence({"(no barcode)@3:07"}, empty())).classes == [FALSE_EMPTY]


def test_a_hardware_change_during_the_scan_must_be_flagged() -> None:
    unflagged = classify(evidence({"LYS-0001"}, mounted("LYS-0001", changed=False), hw_changed=True))
    assert unflagged.classes == [UNFLAGGED_CHANGE]
    flagged = classify(evidence({"LYS-0001"}, mounted("LYS-0001", changed=True), hw_changed=True))
    assert flagged.classes == [OK]
    # HDF5 gives the flag back as a numpy bool
    h5 = {"state": "MOUNTED", "barcode": "LYS-0001", "@changed_during_scan": np.bool_(True)}
    assert classify(
        evidence({"LYS-0001"}, mounted("LYS-0001", changed=True), h5, hw_changed=True)
    ).classes == [OK]


def test_doubt_with_a_reason_is_flagged_doubt_and_without_one_is_silent() -> None:
    conflict = {"state": "CONFLICT", "reason": "the sources disagree", "@changed_during_scan": False}
    assert classify(evidence({"LYS-0001"}, conflict)).classes == [FLAGGED_DOUBT]
    unknown = {"state": "UNKNOWN", "reason": "", "@changed_during_scan": False}
    assert classify(evidence({None}, unknown)).classes == [SILENT]
    # doubt still has to flag a change
    assert classify(evidence({None}, conflict, hw_changed=True)).classes == [FLAGGED_DOUBT, UNFLAGGED_CHANGE]


def test_no_tag_or_an_error_tag_is_silent() -> None:
    assert classify(evidence({None}, None, None)).classes == [SILENT]
    error = {"state": "ERROR", "reason": "sample tagging failed: KeyError: 'x'"}
    assert classify(evidence({None}, error)).classes == [SILENT]


def test_redis_and_hdf5_disagreeing_is_a_mismatch() -> None:
    verdict = classify(evidence({"LYS-0001"}, mounted("LYS-0001"), mounted("LYS-0002")))
    assert verdict.classes == [WRONG, MISMATCH]  # the HDF5 tag is wrong too: both counted
    assert classify(evidence({"LYS-0001"}, mounted("LYS-0001"), None)).classes == [MISMATCH]


def test_icat_sample_name_must_name_the_tagged_sample() -> None:
    names = frozenset({"LYS-0001", "lysozyme_1", "LYS-0002", "lysozyme_2"})
    tag = mounted("LYS-0001", name="lysozyme_1")
    good = classify(
        evidence({"LYS-0001"}, tag, policy=True, icat_sample_name="lysozyme_1", sample_names=names)
    )
    assert good.classes == [OK] and not good.policy_mismatch
    stale = classify(
        evidence({"LYS-0001"}, tag, policy=True, icat_sample_name="lysozyme_2", sample_names=names)
    )
    assert stale.classes == [MISMATCH] and stale.policy_mismatch
    # EMPTY: the collection's name is fine, a sample's is not
    ok_empty = classify(
        evidence({None}, empty(), policy=True, icat_sample_name="provenance", sample_names=names)
    )
    assert ok_empty.classes == [OK]
    named = classify(
        evidence({None}, empty(), policy=True, icat_sample_name="lysozyme_2", sample_names=names)
    )
    assert named.classes == [MISMATCH] and named.policy_mismatch
    # without the policy the snapshot is not looked at
    assert classify(evidence({"LYS-0001"}, tag, icat_sample_name="lysozyme_2")).classes == [OK]


def test_a_scan_that_raised_is_only_raised() -> None:
    verdict = classify(evidence({None}, None, None, raised="RuntimeError: Dataset is already closed"))
    assert verdict.classes == [RAISED]
    assert verdict.bad == [RAISED]


def test_flag_reads_every_encoding_of_a_boolean() -> None:
    assert flag(True) and flag(np.bool_(True)) and flag(b"True") and flag("true") and flag(1)
    assert not (flag(False) or flag(np.bool_(False)) or flag(None) or flag("False") or flag(0))


def test_timeline_windows() -> None:
    timeline = Timeline(None, at=0.0)
    assert not timeline.record(None, "same state: no change", at=0.5)
    called = timeline.mark()
    timeline.record("LYS-0001", "loaded", at=1.0)
    start = timeline.mark()
    assert timeline.states_between(called, start) == {None, "LYS-0001"}
    assert not timeline.changed_between(start, timeline.mark())
    timeline.record(None, "unloaded", at=2.0)
    timeline.record("LYS-0001", "loaded again", at=3.0)  # same state at both ends: still a change
    end = timeline.mark()
    assert timeline.changed_between(start, end)
    assert timeline.states_between(start, start) == {"LYS-0001"}
    assert timeline.index_at(2.5) == 2
    assert [e["state"] for e in timeline.entries(start, end)] == ["LYS-0001", "(empty)", "LYS-0001"]
