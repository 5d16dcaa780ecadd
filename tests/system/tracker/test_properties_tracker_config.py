"""Property-based tests of the tracker's configuration keys (those it checks before it opens Redis)
on garbage input: ``SampleTracker`` raises ``ConfigurationError`` naming the key and the file.
The tracker imports BLISS; the other configurations: tests/unit/test_properties_config.py.

A failure prints the falsifying example (hypothesis); run again with it to reproduce.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from config_strategies import BOUNDED, Node, assert_names, yaml_values
from hypothesis import given
from hypothesis import strategies as st

from bliss_sampletrack.errors import ConfigurationError


def not_one_of(*valid: Any) -> st.SearchStrategy[Any]:
    return yaml_values.filter(
        lambda v: v is not None and all(v != ok or type(v) is not type(ok) for ok in valid)
    )


TRACKER_GARBAGE = {
    "beamline": yaml_values.filter(
        lambda v: not (isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", v))
    ),
    "reader": yaml_values.filter(lambda v: v is not None),
    "reader_mode": not_one_of("triggered", "continuous"),
    "unknown_barcode": not_one_of("accept", "refuse"),
    "scan_policy": not_one_of("allow", "refuse_without_sample"),
    "tag_scans": not_one_of(True, False),
    "icat_fields": not_one_of(True, False),
    "new_dataset_on_change": not_one_of(True, False),
    "no_read": yaml_values.filter(
        lambda v: (
            not (
                v is None
                or isinstance(v, str)
                or (isinstance(v, list) and all(isinstance(s, str) for s in v))
            )
        )
    ),
    "manifest": yaml_values.filter(
        lambda v: (
            not (
                v is None
                or isinstance(v, str)
                or (isinstance(v, list) and all(isinstance(s, str) for s in v))
            )
        )
    ),
    "a_typo": yaml_values,
}


@BOUNDED
@given(st.sampled_from(sorted(TRACKER_GARBAGE)).flatmap(lambda k: st.tuples(st.just(k), TRACKER_GARBAGE[k])))
def test_tracker_config_errors_name_the_key_and_file(garbage: tuple[str, Any]) -> None:
    from bliss_sampletrack.tracker.controller import SampleTracker

    key, value = garbage
    config = Node(beamline="id00", reader_mode="triggered", unknown_barcode="accept")
    config[key] = value
    with pytest.raises(ConfigurationError) as info:
        SampleTracker("tracker", config)
    assert_names(info.value, key)
