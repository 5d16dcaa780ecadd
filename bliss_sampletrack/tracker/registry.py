"""From a barcode to a full sample record: registries (a local manifest now; ICAT+ later).

A :class:`SampleRegistry` answers ``resolve(barcode)`` with a :class:`Sample` or None (unknown).
Registries chain: the first that knows the barcode wins.

Manifest files (``ManifestRegistry``):
- CSV with a header row; columns ``barcode`` (required), ``name``, ``sample_id``, ``parcel_id``,
  ``parcel_name``, ``container_id``, ``container_name``, ``container_position``; empty cells
  are unknown values.
- YAML: a list of mappings with the same keys, or a mapping ``barcode: {name: ..., ...}``.
  Values are read as the text written (``0042`` stays ``"0042"``, ``1e3`` stays ``"1e3"``: YAML
  would make them numbers whose text differs); an empty value, ``~`` or ``null`` is unknown.
Every row is validated when the file is loaded; an error names the file, the row and the field.
"""

from __future__ import annotations

import csv
import io
import logging
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.core import Sample
from bliss_sampletrack.core.sample import CONTRACT_SAMPLE_FIELDS
from bliss_sampletrack.errors import ConfigurationError, SampleTrackError

log = logging.getLogger(__name__)

MANIFEST_FIELDS = tuple(CONTRACT_SAMPLE_FIELDS)
#: how YAML writes "no value"; read as text (see the module docstring) they mean unknown
_YAML_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_REPR = reprlib.Repr()  # bounded, even for deeply nested YAML (Python 3.11: no keyword arguments)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 40, 40
_short = _REPR.repr


@runtime_checkable
class SampleRegistry(Protocol):
    def resolve(self, barcode: str) -> Sample | None: ...

    def describe(self) -> str: ...


# Optional capabilities: a registry that has one says so by its methods, and the tracker asks
# with ``isinstance(member, Refreshable)``: one declared face per capability, no attribute probing.
@runtime_checkable
class Refreshable(Protocol):
    """Can read its source again now (``tracker.refresh_registry()``); raises SampleTrackError."""

    def refresh(self) -> object: ...


@runtime_checkable
class Prefetching(Protocol):
    """Reads its source in the background when the tracker starts; returns that greenlet."""

    def prefetch(self) -> Any: ...


@runtime_checkable
class Closable(Protocol):
    """Holds resources (HTTP sessions, greenlets) that the tracker's close() releases."""

    def close(self) -> None: ...


@runtime_checkable
class Locating(Protocol):
    """Knows samples by changer location too (ICAT+ parcels declare where each sample goes)."""

    def resolve_location(self, location: str | int, position: str | int | None = None) -> Sample | None: ...


class ManifestRegistry:
    """Samples listed in a CSV or YAML file, loaded (and validated) at construction.

    ``text``: the file's content when it was fetched elsewhere (e.g. from the beacon
    configuration database); ``path`` then only names it (and its suffix gives the format).
    """

    def __init__(self, path: str | Path, text: str | None = None) -> None:
        self.path = Path(path)
        if text is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"sample manifest {self.path}: cannot be read ({exc})") from None
        is_csv = self.path.suffix.lower() == ".csv"
        rows = self._rows_csv(text) if is_csv else self._rows_yaml(text)
        self.samples: dict[str, Sample] = {}
        for where, row in rows:
            sample = self._sample(where, row, frozenset({""}) if is_csv else _YAML_NULLS)
            assert sample.barcode is not None
            if sample.barcode in self.samples:
                raise ConfigurationError(
                    f"sample manifest {self.path}, {where}: barcode {sample.barcode!r} is listed twice"
                )
            self.samples[sample.barcode] = sample

    def resolve(self, barcode: str) -> Sample | None:
        return self.samples.get(barcode)

    def describe(self) -> str:
        return f"manifest {self.path} ({len(self.samples)} samples)"

    def _rows_csv(self, text: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        # newline="": the csv module then reads CR, LF and CR LF line ends, and newlines in quotes
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            fieldnames = reader.fieldnames or []
            unknown = sorted(set(fieldnames) - set(MANIFEST_FIELDS))
            if "barcode" not in fieldnames or unknown:
                raise ConfigurationError(
                    f"sample manifest {self.path}: the header must have a 'barcode' column and only "
                    f"{', '.join(MANIFEST_FIELDS)}; got {fieldnames}"
                )
            rows = []
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row:  # DictReader's key for the cells beyond the header's
                    raise ConfigurationError(
                        f"sample manifest {self.path}, {where}: {len(row[None])} more cell(s) than the "
                        f"header's {len(fieldnames)} columns; quote cells that contain a comma"
                    )
                rows.append((where, row))
        except csv.Error as exc:
            raise ConfigurationError(
                f"sample manifest {self.path}, line {reader.line_num}: not a CSV file that can be read "
                f"({exc}); save it as plain CSV (comma-separated, UTF-8)"
            ) from None
        return rows

    def _rows_yaml(self, text: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            # "base": every scalar as the text written (see the module docstring)
            data = YAML(typ="base").load(text)
        except (YAMLError, ValueError, RecursionError) as exc:
            problem = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise ConfigurationError(f"sample manifest {self.path}: not valid YAML ({problem})") from None
        if isinstance(data, Mapping):
            rows = []
            for code, fields in data.items():
                where = f"entry {_short(code)}"
                if fields is None or (isinstance(fields, str) and fields in _YAML_NULLS):
                    fields = {}
                if not isinstance(fields, Mapping):
                    raise ConfigurationError(
                        f"sample manifest {self.path}, {where}: expected the sample's fields "
                        f"(name: ..., sample_id: ...), got {_short(fields)}"
                    )
                if fields.get("barcode", code) != code:
                    raise ConfigurationError(
                        f"sample manifest {self.path}, {where}: the key is the barcode, yet the "
                        f"'barcode' field says {_short(fields['barcode'])}; remove that field"
                    )
                rows.append((where, {"barcode": code, **fields}))
            return rows
        if isinstance(data, list):
            return [(f"entry {i + 1}", row) for i, row in enumerate(data)]
        raise ConfigurationError(
            f"sample manifest {self.path}: expected a list of samples or a mapping barcode -> fields, "
            f"got {type(data).__name__}"
        )

    def _sample(self, where: str, row: Mapping[str, Any], nulls: frozenset[str]) -> Sample:
        if not isinstance(row, Mapping):
            raise ConfigurationError(
                f"sample manifest {self.path}, {where}: expected a mapping of fields, got {_short(row)}"
            )
        unknown = sorted(set(row) - set(MANIFEST_FIELDS), key=str)
        if unknown:
            raise ConfigurationError(
                f"sample manifest {self.path}, {where}: unknown field {_short(unknown[0])} "
                f"(known: {', '.join(MANIFEST_FIELDS)})"
            )
        values: dict[str, str | None] = {}
        for key, value in row.items():
            if value is not None and not isinstance(value, str):  # a YAML list or mapping
                raise ConfigurationError(
                    f"sample manifest {self.path}, {where}: field {key!r} must be text, got {_short(value)}"
                )
            values[key] = None if value is None or value in nulls else value
        if values.get("barcode") is None:
            raise ConfigurationError(f"sample manifest {self.path}, {where}: the barcode is missing")
        try:
            return Sample(**values)
        except SampleTrackError as exc:
            raise ConfigurationError(f"sample manifest {self.path}, {where}: {exc}") from None


class ChainRegistry:
    """Ask each registry in turn; the first that knows the barcode answers."""

    def __init__(self, registries: Iterable[SampleRegistry]) -> None:
        self.registries = list(registries)

    def resolve(self, barcode: str) -> Sample | None:
        for registry in self.registries:
            sample = registry.resolve(barcode)
            if sample is not None:
                return sample
        return None

    def describe(self) -> str:
        return " -> ".join(r.describe() for r in self.registries) or "none"
