"""The service's settings: defaults < configuration file (TOML) < environment < command line.

Configuration file (``--config FILE`` or ``SAMPLETRACK_SERVICE_CONFIG``), TOML, keys at the top
level or in a ``[service]`` table::

    db = "postgresql://sampletrack@dbhost/sampletrack"
    host = "0.0.0.0"
    port = 8090
    base_path = "/api/v1"
    threads = 8
    max_body_bytes = 1048576          # POST /events
    max_batch_body_bytes = 16777216   # POST /events/batch
    log_level = "INFO"
    validation_workers = 2            # processes validating large batches (0: none)

Environment: ``SAMPLETRACK_SERVICE_<KEY>`` for each key (``SAMPLETRACK_SERVICE_DB``, ...).

Caveat: a database URL with a password is better given by the environment than in a file that
others can read; it is never logged (``redact_url``).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.service.validation import default_workers

ENV_PREFIX = "SAMPLETRACK_SERVICE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
MIB = 1024 * 1024
_BASE_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    db: str = "sqlite:///./sampletrack.db"
    host: str = "127.0.0.1"
    port: int = 8090
    base_path: str = "/api/v1"
    threads: int = 8
    max_body_bytes: int = 1 * MIB
    max_batch_body_bytes: int = 16 * MIB
    log_level: str = "INFO"
    #: processes that validate large batches (0: in the request's thread); see validation.py
    validation_workers: int = field(default_factory=default_workers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_path", normalise_base_path(self.base_path))
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.validation_workers <= 64:
            raise ConfigurationError(f"validation_workers must be 0..64, got {self.validation_workers}")
        if not 1 <= self.threads <= 256:
            raise ConfigurationError(f"threads must be 1..256, got {self.threads}")
        for name in ("max_body_bytes", "max_batch_body_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigurationError(f"{name} must be at least 1024, got {getattr(self, name)}")
        if logging.getLevelName(self.log_level.upper()) not in range(0, 60):
            raise ConfigurationError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )

    def redacted(self) -> dict[str, Any]:
        from bliss_sampletrack.service.storage import redact_url

        return {**asdict(self), "db": redact_url(self.db)}


def normalise_base_path(path: str) -> str:
    """``/api/v1/`` -> ``/api/v1``; ``/`` or empty -> ``""`` (the API at the root)."""
    path = path.strip().rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    if not _BASE_PATH.fullmatch(path):
        raise ConfigurationError(
            f"base_path {path!r} must be a URL path like /api/v1 (letters, digits, . _ ~ -)"
        )
    return path


def _coerce(name: str, value: Any, where: str) -> Any:
    kind = {f.name: f.type for f in fields(ServiceConfig)}[name]
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigurationError(f"{where}: {name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: {name} must be an integer, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: {name} must be a string, got {value!r}")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from None
    if isinstance(data.get("service"), dict):
        data = {**{k: v for k, v in data.items() if k != "service"}, **data["service"]}
    known = {f.name for f in fields(ServiceConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigurationError(
            f"configuration file {str(path)!r}: unknown key(s) {unknown}; known keys: {sorted(known)}"
        )
    return {key: _coerce(key, value, str(path)) for key, value in data.items()}


def load_config(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Merge defaults, the file, the environment and ``overrides`` (None values are ignored)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or environ.get(CONFIG_ENV)
    if path:
        values.update(read_config_file(Path(path)))
    for f in fields(ServiceConfig):
        env_name = ENV_PREFIX + f.name.upper()
        if env_name in environ:
            values[f.name] = _coerce(f.name, environ[env_name], f"environment variable {env_name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return replace(ServiceConfig(), **values)
