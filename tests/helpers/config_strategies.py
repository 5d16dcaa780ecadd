"""What YAML can produce, as hypothesis strategies, and a stand-in for beacon's ``ConfigNode``: the
configuration property tests' common ground (tests/unit/test_properties_config.py,
tests/system/tracker/test_properties_tracker_config.py)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bliss_sampletrack.errors import ConfigurationError

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILE = "sampletrack/readers.yml"


class Node(dict[Any, Any]):
    """A beacon ``ConfigNode`` as the plugin sees it: a mapping that knows its YAML file."""

    filename = FILE


# --- what YAML can produce ----------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "\r\n", "host:", ":80", "h:²", "h:0", "h:65536", "/dev/ttyS0", "1e3"]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, 1e-300, 2**63]),
    st.dates(),
    st.datetimes(),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.integers(0, 9) | st.booleans(), inner, max_size=3)
    ),
    max_leaves=8,
)


def assert_names(exc: ConfigurationError, key: str, file: str = FILE) -> None:
    message = str(exc)
    assert f"{key!r}" in message or f"'{key.split('.')[0]}" in message, (key, message)
    assert file in message, (file, message)
