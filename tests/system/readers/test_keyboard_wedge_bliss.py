"""The keyboard wedge's configuration example through a real BLISS ``ConfigNode`` (BLISS imported,
no session); the reader itself: tests/unit/readers/test_keyboard_wedge.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.readers import keyboard_wedge as kw
from bliss_sampletrack.readers.keyboard_wedge import KeyboardWedgeReader

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "config_examples/readers/keyboard_wedge.yml"


def load_example() -> dict[str, Any]:
    from ruamel.yaml import YAML

    (item,) = YAML(typ="safe").load(EXAMPLE.read_text())
    return dict(item)


def test_example_yaml_builds_a_reader_through_a_bliss_config_node() -> None:
    """A real BLISS ``ConfigNode`` (lists become ConfigList, ``filename`` is a property).

    The beacon-served variant is left out: the demo config tree belongs to another part of the
    project, and a real ``config.get()`` would only add beacon's YAML loading to this test.
    """
    static = pytest.importorskip("bliss.config.static")
    item = load_example()
    assert (item["plugin"], item["class"], item["package"]) == ("bliss", "KeyboardWedgeReader", kw.__name__)
    node = static.ConfigNode(filename="readers/keyboard_wedge.yml")
    for key, value in item.items():
        if key != "name":  # naming would index the node in BLISS's global registry
            node[key] = static.convert_value(value, node)
    reader = KeyboardWedgeReader(item["name"], node)
    assert reader.settings.no_read == ("FAIL",) and reader.timeout == 10.0 and reader.settings.grab is True
    node["max_length"] = 100
    with pytest.raises(ConfigurationError, match=r"\(readers/keyboard_wedge.yml\): key 'max_length'"):
        KeyboardWedgeReader(item["name"], node)
