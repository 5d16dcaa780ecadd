"""Typed access to a BLISS object's YAML node, with errors that name the key and the file.

``config`` is a BLISS ``ConfigNode`` (a mapping with a ``filename``) or any mapping, for use
outside BLISS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from bliss_sampletrack.errors import ConfigurationError

T = TypeVar("T")
_MISSING = object()


class ObjectConfig:
    """Typed access to one object's YAML node."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ConfigurationError(
                f"the configuration of {name!r} must be a mapping, got {type(config).__name__}"
            )
        self.name = name
        self.config = config
        self.filename = getattr(config, "filename", None) or "<not from a YAML file>"

    def error(self, key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{self.name!r} in {self.filename}: key {key!r} {problem}")

    def get(self, key: str, kind: type[T], default: Any = _MISSING) -> T:
        value = self.config.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise self.error(key, "is missing")
            return default  # type: ignore[no-any-return]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(key, f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, float, default)
        if not 0 < value < math.inf:  # NaN and .inf too: a wait must end
            raise self.error(key, f"must be > 0 (and finite), got {value!r}")
        return value

    def text_bytes(self, key: str, default: bytes | None) -> bytes | None:
        """A string key sent on the wire (YAML double quotes give "\\r\\n" escapes)."""
        value = self.get(key, str, None)
        if value is None:
            return default
        try:
            encoded = value.encode("ascii")
        except UnicodeEncodeError:
            raise self.error(key, f"must be ASCII, got {value!r}") from None
        if not encoded:
            raise self.error(key, "must not be empty")
        return encoded

    def string_list(self, key: str) -> tuple[str, ...]:
        """A list of strings; one string is a list of one; missing or empty is ()."""
        value = self.config.get(key)
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            return (value,)
        # any sequence but text: beacon hands YAML lists over as ConfigList (not a list)
        listed = isinstance(value, Sequence) and not isinstance(value, str | bytes)
        if not listed or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def check_known(self, known: set[str]) -> None:
        """Refuse keys that nothing reads: a typo must not silently keep a default."""
        ignored = {"name", "class", "plugin", "package", "module"}
        unknown = sorted(set(self.config) - known - ignored, key=str)  # YAML keys may be numbers
        if unknown:
            raise self.error(unknown[0], f"is not a known key (known: {', '.join(sorted(known))})")
