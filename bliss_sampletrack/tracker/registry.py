"""From a barcode to a full sample record: registries (a local manifest now; ICAT+ later).

A :class:`SampleRegistry` answers ``resolve(barcode)`` with a :class:`Sample` or None (unknown).
Registries chain: the first that knows the barcode wins.

Manifest files (``ManifestRegistry``):
- CSV with a header row; columns ``barcode`` (required), ``name``, ``sample_id``, ``parcel_id``,
  ``parcel_name``, ``container_id``, ``container_name``, ``container_position``; empty cells
  are unknown values.
- YAML: a list of mappings with the same keys, or a mapping ``barcode: {name: ..., ...}``.
Every row is validated when the file is loaded; an error names the file, the row and the field.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.core import Sample
from bliss_sampletrack.core.sample import CONTRACT_SAMPLE_FIELDS
from bliss_sampletrack.errors import ConfigurationError, SampleTrackError

log = logging.getLogger(__name__)

MANIFEST_FIELDS = tuple(CONTRACT_SAMPLE_FIELDS)


@runtime_checkable
class SampleRegistry(Protocol):
    def resolve(self, barcode: str) -> Sample | None: ...

    def describe(self) -> str: ...


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
        rows = self._rows_csv(text) if self.path.suffix.lower() == ".csv" else self._rows_yaml(text)
        self.samples: dict[str, Sample] = {}
        for where, row in rows:
            sample = self._sample(where, row)
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
        reader = csv.DictReader(io.StringIO(text))
        unknown = sorted(set(reader.fieldnames or []) - set(MANIFEST_FIELDS))
        if "barcode" not in (reader.fieldnames or []) or unknown:
            raise ConfigurationError(
                f"sample manifest {self.path}: the header must have a 'barcode' column and only "
                f"{', '.join(MANIFEST_FIELDS)}; got {reader.fieldnames}"
            )
        return [(f"line {reader.line_num}", row) for row in reader]

    def _rows_yaml(self, text: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            data = YAML(typ="safe").load(text)
        except YAMLError as exc:
            raise ConfigurationError(f"sample manifest {self.path}: not valid YAML ({exc})") from None
        if isinstance(data, Mapping):
            return [(f"entry {code!r}", {"barcode": code, **(fields or {})}) for code, fields in data.items()]
        if isinstance(data, list):
            return [(f"entry {i + 1}", row) for i, row in enumerate(data)]
        raise ConfigurationError(
            f"sample manifest {self.path}: expected a list of samples or a mapping barcode -> fields, "
            f"got {type(data).__name__}"
        )

    def _sample(self, where: str, row: Mapping[str, Any]) -> Sample:
        if not isinstance(row, Mapping):
            raise ConfigurationError(f"sample manifest {self.path}, {where}: expected a mapping, got {row!r}")
        unknown = sorted(set(row) - set(MANIFEST_FIELDS))
        if unknown:
            raise ConfigurationError(
                f"sample manifest {self.path}, {where}: unknown field {unknown[0]!r} "
                f"(known: {', '.join(MANIFEST_FIELDS)})"
            )
        values = {key: (None if value in (None, "") else str(value)) for key, value in row.items()}
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
