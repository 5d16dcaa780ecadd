"""Readers as real BLISS config objects: beacon YAML -> config.get(name) -> a working driver.

Each test writes its YAML into the running beacon's database folder and reloads the config, as
a beamline scientist adding a reader to the beamline's configuration would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML  # BLISS's own YAML library

from bliss_sampletrack.errors import ConfigurationError, NoReadError
from bliss_sampletrack.readers import BarcodeReader, ConnectionState
from bliss_sampletrack.readers.simulators.server import ReaderSimulator

pytestmark = pytest.mark.bliss
EXAMPLES = Path(__file__).resolve().parents[3] / "config_examples" / "readers"


def test_keyence_from_beacon_yaml_reads_its_simulator(add_yaml: Callable[[str], Any]) -> None:
    with ReaderSimulator("keyence") as simulator:
        config = add_yaml(
            f"""
            - name: yaml_bcr
              plugin: bliss
              package: bliss_sampletrack.readers
              class: KeyenceSR
              tcp:
                url: {simulator.url}
              timeout: 1.5
            """
        )
        reader = config.get("yaml_bcr")
        try:
            assert isinstance(reader, BarcodeReader)
            assert reader.timeout == 1.5
            simulator.queue("YAML-1")
            assert reader.read().barcode == "YAML-1"
            simulator.no_read()
            with pytest.raises(NoReadError):
                reader.read()
            assert "Keyence SR" in reader.__info__() and "connected" in reader.__info__()
        finally:
            reader.close()


def test_simulated_reader_object(add_yaml: Callable[[str], Any]) -> None:
    config = add_yaml(
        """
        - name: yaml_sim
          plugin: bliss
          package: bliss_sampletrack.readers
          class: SimulatedReader
          family: dataman
          present: PIN-77
        """
    )
    reader = config.get("yaml_sim")
    try:
        assert reader.read().barcode == "PIN-77"
        reader.remove()
        with pytest.raises(NoReadError):
            reader.read()
        assert reader.state is ConnectionState.CONNECTED
        assert "presenting nothing" in reader.__info__()
    finally:
        reader.close()


def test_wrong_key_names_the_key_and_the_yaml_file(add_yaml: Callable[[str], Any]) -> None:
    config = add_yaml(
        """
        - name: yaml_bad
          plugin: bliss
          package: bliss_sampletrack.readers
          class: KeyenceSR
          tcp:
            url: localhost:notaport
        """
    )
    from bliss.config.static import ObjectCreationFailed

    with pytest.raises((ConfigurationError, ObjectCreationFailed)) as info:  # BLISS wraps the error
        config.get("yaml_bad")
    cause = info.value if isinstance(info.value, ConfigurationError) else info.value.__cause__
    assert isinstance(cause, ConfigurationError), repr(info.value)
    assert "'tcp.url'" in str(cause) and "tests/" in str(cause) and ".yml" in str(cause)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_every_reader_example_builds(example: Path) -> None:
    """The examples in config_examples/readers are valid (objects built, nothing connected)."""
    import importlib

    for node in YAML(typ="safe").load(example.read_text()):
        cls = getattr(importlib.import_module(node["package"]), node["class"])
        reader = cls(node["name"], node)
        try:
            assert isinstance(reader, BarcodeReader)
        finally:
            reader.close()
