"""Property-based tests of the YAML configuration and the sample manifests, on garbage input.

What they prove, for any values YAML can produce (None, booleans, integers, floats with NaN and
infinities, text, dates, lists, mappings with non-text keys):
- ``ObjectConfig`` and every from-config constructor (reader drivers, keyboard wedge, delivery
  clients; the tracker's, which imports BLISS: tests/system/tracker/
  test_properties_tracker_config.py) return a working object or raise ``ConfigurationError``
  naming the key and the file, never ``TypeError``/``KeyError``/``AttributeError``/``ValueError``
  of their own;
- a manifest (CSV or YAML text) loads, or raises ``ConfigurationError`` naming the file and the
  row (or entry); a loaded manifest never maps a no-read (or malformed text) to a sample.

A failure prints the falsifying example (hypothesis); run again with it to reproduce.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from config_strategies import BOUNDED, FILE, Node, assert_names, yaml_values
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core.barcode import is_no_read, validate_barcode
from bliss_sampletrack.core.sample import CONTRACT_SAMPLE_FIELDS
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.readers.config import ReaderConfig
from bliss_sampletrack.readers.drivers import CognexDataMan, GenericLineReader, KeyenceSR, Microscan
from bliss_sampletrack.readers.keyboard_wedge import parse_config as wedge_config
from bliss_sampletrack.readers.transports import SerialTransport, TcpTransport
from bliss_sampletrack.tracker.registry import ManifestRegistry


# --- ObjectConfig ---------------------------------------------------------------------------------
@BOUNDED
@given(yaml_values, st.sampled_from([str, int, float, bool]))
def test_typed_get_returns_the_kind_or_names_key_and_file(value: Any, kind: type) -> None:
    cfg = ObjectConfig("bcr", Node(timeout=value))
    try:
        got = cfg.get("timeout", kind, "default")
    except ConfigurationError as exc:
        assert_names(exc, "timeout")
        return
    assert (
        got == "default"
        if value is None
        else (isinstance(got, kind) and (kind is bool) == isinstance(got, bool))
    )


@BOUNDED
@given(yaml_values)
@example(math.nan)
@example(-math.inf)
@example(math.inf)
def test_positive_is_a_finite_positive_number_or_an_error(value: Any) -> None:
    try:
        got = ObjectConfig("bcr", Node(timeout=value)).positive("timeout", 3.0)
    except ConfigurationError as exc:
        assert_names(exc, "timeout")
    else:
        assert isinstance(got, float) and 0 < got and math.isfinite(got)


@BOUNDED
@given(yaml_values)
def test_text_bytes_is_ascii_or_an_error(value: Any) -> None:
    try:
        got = ObjectConfig("bcr", Node(terminator=value)).text_bytes("terminator", b"\r\n")
    except ConfigurationError as exc:
        assert_names(exc, "terminator")
    else:
        assert got == b"\r\n" if value is None else (got == value.encode("ascii") and got)


@BOUNDED
@given(yaml_values)
def test_string_list_is_a_tuple_of_strings_or_an_error(value: Any) -> None:
    try:
        got = ObjectConfig("bcr", Node(no_read=value)).string_list("no_read")
    except ConfigurationError as exc:
        assert_names(exc, "no_read")
    else:
        assert isinstance(got, tuple) and all(isinstance(s, str) for s in got)
        assert isinstance(value, str | list | None), value  # a mapping's keys are not a list
        assert got == (() if not value else ((value,) if isinstance(value, str) else tuple(value)))


@BOUNDED
@given(
    st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans() | st.none(), yaml_values, max_size=5)
)
def test_unknown_keys_of_any_type_are_named(config: dict[Any, Any]) -> None:
    cfg = ObjectConfig("bcr", Node(config))
    known = {"timeout", "tcp"}
    unknown = {k for k in config if k not in known | {"name", "class", "plugin", "package", "module"}}
    if not unknown:
        cfg.check_known(known)
        return
    with pytest.raises(ConfigurationError, match="is not a known key") as info:
        cfg.check_known(known)
    assert FILE in str(info.value) and any(repr(k) in str(info.value) for k in unknown)


@BOUNDED
@given(yaml_values)
def test_a_node_that_is_not_a_mapping_is_named(value: Any) -> None:
    assume(not isinstance(value, Mapping))
    with pytest.raises(ConfigurationError, match="'bcr'.*must be a mapping"):
        ObjectConfig("bcr", value)


# --- reader transports and drivers -----------------------------------------------------------------
@BOUNDED
@given(
    st.sampled_from(["tcp", "serial"]),
    yaml_values
    | st.dictionaries(st.sampled_from(["url", "baudrate"]), yaml_values, max_size=2)
    | st.builds(dict, url=st.from_regex(r"\A(tcp://)?[\w.:\[\]-]{0,12}(:[\d²³¹٣]{0,7})?\Z")),
    st.sampled_from([None, 9004]),
)
def test_transport_keys_give_a_transport_or_name_the_key(
    kind: str, node: Any, default_port: int | None
) -> None:
    cfg = ReaderConfig("bcr", Node({kind: node}))
    try:
        transport = cfg.transport(default_port)
    except ConfigurationError as exc:
        assert_names(exc, kind)
        return
    if isinstance(transport, TcpTransport):
        assert 0 < transport.port < 65536 and transport.host
        assert str(transport.port) in node["url"] or transport.port == default_port
    else:
        assert isinstance(transport, SerialTransport) and transport.baudrate > 0


DRIVERS = {
    KeyenceSR: {"tcp": {"url": "127.0.0.1:9"}},
    CognexDataMan: {"tcp": {"url": "127.0.0.1"}},
    Microscan: {"serial": {"url": "/dev/ttyS0"}, "trigger_char": "\x1d"},
    GenericLineReader: {"tcp": {"url": "127.0.0.1:9"}, "terminator": "\r\n", "trigger": "T\r"},
}
DRIVER_KEYS = ["tcp", "serial", "timeout", "connect_timeout", "no_read", "max_line", "trigger_char"]
DRIVER_KEYS += ["terminator", "trigger", "stop", "tcp.url", "serial.url", "serial.baudrate"]


def with_garbage(base: dict[str, Any], key: str, value: Any) -> Node:
    config = Node({k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()})
    if "." in key:
        outer, inner = key.split(".")
        node = config.get(outer)
        config[outer] = {**(node if isinstance(node, dict) else {}), inner: value}
    else:
        config[key] = value
    return config


@BOUNDED
@given(
    st.sampled_from(sorted(DRIVERS, key=str)),
    st.lists(st.tuples(st.sampled_from(DRIVER_KEYS), yaml_values), max_size=3),
)
def test_reader_drivers_are_built_or_name_the_bad_key(driver: type, garbage: list[tuple[str, Any]]) -> None:
    config = Node(DRIVERS[driver])
    for key, value in garbage:
        config = with_garbage(config, key, value)
    try:
        reader = driver("bcr", config)
    except ConfigurationError as exc:
        assert FILE in str(exc) and re.search(r"key '[\w.]+'", str(exc)), str(exc)
        return
    try:
        assert reader.timeout > 0 and reader.connect_timeout > 0
        assert math.isfinite(reader.timeout) and math.isfinite(reader.connect_timeout)
        assert reader.dialect.terminator and all(isinstance(s, str) for s in reader.dialect.no_read)
    finally:
        reader.close()


@settings(max_examples=50, deadline=None)
@given(st.integers(-5, 0))
def test_a_reader_refuses_a_max_line_that_is_not_positive(max_line: int) -> None:
    with pytest.raises(ConfigurationError, match="max_line"):
        KeyenceSR("bcr", Node(tcp={"url": "127.0.0.1:9"}, max_line=max_line)).close()


@BOUNDED
@given(
    st.dictionaries(
        st.sampled_from(["device", "grab", "no_read", "timeout", "max_length", "typo", 7]), yaml_values
    )
)
def test_keyboard_wedge_settings_are_valid_or_name_the_key(config: dict[Any, Any]) -> None:
    try:
        settings_ = wedge_config("wedge", Node(config))
    except ConfigurationError as exc:
        assert FILE in str(exc) and "key " in str(exc)
    else:
        assert settings_.device and isinstance(settings_.grab, bool)
        assert 0 < settings_.timeout < math.inf and 0 < settings_.max_length <= 64


# --- delivery clients ------------------------------------------------------------------------------
DELIVERY_KEYS = ["type", "name", "url", "token", "token_env", "verify_tls", "timeout", "max_batch"]


@BOUNDED
@given(
    yaml_values
    | st.dictionaries(st.sampled_from(DELIVERY_KEYS), yaml_values, max_size=4).map(
        lambda d: {"type": "rest", "url": "http://127.0.0.1:9/api/v1", "token": "t", **d}
    )
)
def test_delivery_entries_give_a_client_or_a_configuration_error(entry: Any) -> None:
    from bliss_sampletrack.delivery.clients import client_from_config

    where = f"'tracker' in {FILE}, key 'delivery'"
    try:
        client_from_config(entry, where)
    except ConfigurationError as exc:
        assert where in str(exc)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"timeout": math.nan}, "key 'timeout' must be a finite number of seconds > 0"),
        ({"timeout": math.inf}, "key 'timeout' must be a finite number of seconds > 0"),
        ({"timeout": 0}, "key 'timeout' must be a finite number of seconds > 0"),
        ({"timeout": True}, "key 'timeout' must be a finite number of seconds > 0"),
        ({"timeout": "10"}, "key 'timeout' must be a finite number of seconds > 0"),
        ({"max_batch": 2.5}, "key 'max_batch' must be a whole number of events 1..1000"),
        ({"max_batch": True}, "key 'max_batch' must be a whole number of events 1..1000"),
        ({"max_batch": 0}, "key 'max_batch' must be a whole number of events 1..1000"),
        ({"max_batch": 1001}, "key 'max_batch' must be a whole number of events 1..1000"),
        ({"token": ["a"]}, "key 'token' must be non-empty text"),
        ({"token": "two words"}, "the token must be ASCII text without spaces"),
        ({"token": None, "token_env": ["X"]}, "key 'token_env' must be the name of an environment"),
    ],
)
def test_delivery_errors_say_which_key_and_what_it_must_be(extra: dict[str, Any], expected: str) -> None:
    from bliss_sampletrack.delivery.clients import client_from_config

    where = f"'tracker' in {FILE}, key 'delivery'"
    entry = {"name": "svc", "type": "rest", "url": "http://127.0.0.1:9/api/v1", "token": "t0ken", **extra}
    entry = {key: value for key, value in entry.items() if value is not None}
    with pytest.raises(ConfigurationError) as info:
        client_from_config(entry, where)
    assert str(info.value).startswith(f"{where}: delivery 'svc': "), str(info.value)
    assert expected in str(info.value)
    assert "t0ken" not in str(info.value)


@pytest.mark.parametrize("entry", ["rest", ["rest"], 3, None])
def test_a_delivery_entry_that_is_not_a_mapping_says_so(entry: Any) -> None:
    from bliss_sampletrack.delivery.clients import client_from_config

    where = f"'tracker' in {FILE}, key 'delivery'"
    with pytest.raises(ConfigurationError, match="each delivery entry must be a mapping") as info:
        client_from_config(entry, where)
    assert str(info.value).startswith(where) and repr(entry) in str(info.value)


# --- manifests ----------------------------------------------------------------------------------------
FIELDS = list(CONTRACT_SAMPLE_FIELDS)
NO_READS = ["ERROR", "NOREAD", "error", " NoRead ", "", " ", "\t"]
cell_text = st.one_of(
    st.text(max_size=10),
    st.sampled_from(NO_READS),
    st.from_regex(r"\A[A-Z]{2,4}-\d{1,4}\Z"),
    st.sampled_from(['"', ",", "\r", "\n", "\r\n", "a\x00b", "x" * 70]),
)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    header = draw(st.lists(st.sampled_from([*FIELDS, "barcode", "colour", ""]), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(cell_text, max_size=6), max_size=6))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


yaml_rows = st.dictionaries(
    st.sampled_from([*FIELDS, "colour"]) | st.integers(0, 3), yaml_values | cell_text, max_size=4
)
yaml_manifests = st.one_of(
    st.lists(yaml_rows | yaml_values, max_size=4),
    st.dictionaries(cell_text | st.integers() | st.booleans(), yaml_rows | yaml_values, max_size=4),
    yaml_values,
)


def yaml_text(data: Any) -> str:
    from ruamel.yaml import YAML

    out = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


def check_manifest(path: Path, text: str) -> None:
    try:
        registry = ManifestRegistry(path, text=text)
    except ConfigurationError as exc:
        message = str(exc)
        assert message.startswith(f"sample manifest {path}"), message  # names the file...
        file_level = re.search(r"header|not valid YAML|expected a list|not a CSV", message)
        assert file_level or re.search(r", (line \d+|entry .+?): ", message), message  # ...and the row
        return
    for barcode, sample in registry.samples.items():
        assert sample.barcode == barcode and validate_barcode(barcode) == barcode
        assert not is_no_read(barcode)
    for text_ in (*NO_READS, "ERROR\r", " ABC", "ABC "):
        assert registry.resolve(text_) is None, text_


@BOUNDED
@given(csv_texts() | st.text(max_size=120))
def test_any_csv_manifest_loads_or_names_file_and_line(text: str) -> None:
    check_manifest(Path("/beamline/samples.csv"), text)


@BOUNDED
@given(yaml_manifests)
def test_any_yaml_manifest_loads_or_names_file_and_entry(data: Any) -> None:
    try:
        text = yaml_text(data)
    except Exception:  # noqa: BLE001 - not every Python value is representable in YAML
        assume(False)
    check_manifest(Path("beacon:sampletrack/samples.yml"), text)


@BOUNDED
@given(st.text(max_size=120))
def test_garbage_yaml_text_loads_or_names_the_file(text: str) -> None:
    check_manifest(Path("samples.yaml"), text)


@pytest.mark.parametrize("written", ["0042", "0x1F", "1e3", "true", "2024-01-01", "12.50", "+1", "0o17"])
def test_yaml_values_are_kept_as_written(written: str) -> None:
    # YAML would read these as numbers, booleans or dates, whose str() is another text (0042 -> 42)
    for text in (f"- barcode: {written}\n  name: {written}\n", f"{written}: {{name: {written}}}\n"):
        sample = ManifestRegistry("samples.yml", text=text).resolve(written)
        assert sample is not None and sample.name == written, text


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "[[[[]]]]"])
def test_a_yaml_collection_is_not_a_field_value(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"samples.yml, entry 1: field 'name' must be text"):
        ManifestRegistry("samples.yml", text=f"- barcode: ABC\n  name: {value}\n")


@pytest.mark.parametrize(
    "text", ["[" * 3000, "- " * 3000 + "a", "- !!timestamp 2024-13-45\n"], ids=["flow", "block", "tag"]
)
def test_pathological_yaml_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sample manifest samples.yml"):
        ManifestRegistry("samples.yml", text=text)


def test_csv_cells_are_kept_verbatim() -> None:
    registry = ManifestRegistry("samples.csv", text="barcode,sample_id\r0042,007\r")
    assert registry.resolve("0042") is not None and registry.resolve("0042").sample_id == "007"  # type: ignore[union-attr]


def test_string_list_takes_any_sequence_like_beacons_config_list() -> None:
    # beacon hands YAML lists over as ConfigList, a MutableSequence that is not a list
    from collections import UserList

    cfg = ObjectConfig("tracker", {"no_read": UserList(["NR", "EMPTY"])})
    assert cfg.string_list("no_read") == ("NR", "EMPTY")
    with pytest.raises(ConfigurationError, match="no_read"):
        ObjectConfig("tracker", {"no_read": UserList(["NR", 3])}).string_list("no_read")
