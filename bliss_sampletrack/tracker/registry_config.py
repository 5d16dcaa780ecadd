"""The sample registries of a tracker, from its beacon configuration (``registries:`` or the older
``manifest:`` key); see the README's configuration reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.tracker.registry import ManifestRegistry, SampleRegistry


def registries_from_config(
    cfg: ObjectConfig, beamline: str, redis: Callable[[], Any], no_read: tuple[str, ...]
) -> list[SampleRegistry]:
    """The registry chain, in order: the ``registries:`` items (``type: manifest`` with ``path``,
    or ``type: icatplus``), or the older ``manifest:`` key (manifests only). ``redis`` gives the
    beacon Redis (the ICAT+ cache): asked only for an ICAT+ registry, so that a configuration
    error is reported as such even where beacon cannot be reached."""
    entries = cfg.config.get("registries")
    manifests = cfg.string_list("manifest")
    if entries is None:
        return [_manifest(cfg, m) for m in manifests]
    if manifests:
        raise cfg.error(
            "manifest", "and 'registries' are both given: list the manifests in 'registries' (type: manifest)"
        )
    # a YAML list from beacon is a ConfigList (a Sequence), not a list
    if isinstance(entries, str | Mapping) or not isinstance(entries, Sequence):
        raise cfg.error(
            "registries", f"must be a list of registries (type: manifest | icatplus), got {entries!r}"
        )
    chain: list[SampleRegistry] = []
    for number, entry in enumerate(entries, 1):
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        build = REGISTRY_TYPES.get(kind) if isinstance(kind, str) else None
        if build is None:
            raise cfg.error(
                "registries", f"item {number}: 'type' must be {' or '.join(REGISTRY_TYPES)}, got {kind!r}"
            )
        chain.append(build(cfg, entry, number, beamline, redis, no_read))
    return chain


def _manifest_entry(
    cfg: ObjectConfig, entry: Mapping[str, Any], number: int, beamline: str, redis: Redis, no_read: NoRead
) -> SampleRegistry:
    if sorted(entry) != ["path", "type"] or not isinstance(entry.get("path"), str):
        raise cfg.error("registries", f"item {number}: a manifest takes 'path' only, got {sorted(entry)}")
    return _manifest(cfg, entry["path"], "registries", f"item {number}: 'path' ")


def _icatplus_entry(
    cfg: ObjectConfig, entry: Mapping[str, Any], number: int, beamline: str, redis: Redis, no_read: NoRead
) -> SampleRegistry:
    from bliss_sampletrack.tracker.icatplus import IcatPlusRegistry  # pyicat-plus: only when used

    where = f"{cfg.name!r} in {cfg.filename}, key 'registries' item {number}"
    return IcatPlusRegistry.from_config(
        _plain(entry), where, redis=redis(), beamline=beamline, no_read=no_read
    )


Redis = Callable[[], Any]
NoRead = tuple[str, ...]
#: the YAML's ``type:`` -> how to build that registry (adding one: a module + one line here)
REGISTRY_TYPES: dict[
    str, Callable[[ObjectConfig, Mapping[str, Any], int, str, Redis, NoRead], SampleRegistry]
] = {
    "manifest": _manifest_entry,
    "icatplus": _icatplus_entry,
}


def _plain(value: Any) -> Any:
    """Beacon's ConfigNode/ConfigList as dict/list (what YAML gives outside BLISS), for code that
    checks ``isinstance(..., list)``."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


def _manifest(cfg: ObjectConfig, location: str, key: str = "manifest", item: str = "") -> ManifestRegistry:
    """An absolute path is a local file; a relative one is a file of the beacon configuration
    (served by beacon like the YAML files, so every BLISS host sees the same manifest)."""
    if Path(location).is_absolute():
        return ManifestRegistry(location)
    from bliss.config.conductor.client import get_text_file

    try:
        text = get_text_file(location)
    except RuntimeError as exc:
        raise cfg.error(key, f"{item}names {location!r}, which beacon cannot serve: {exc}") from None
    return ManifestRegistry(f"beacon:{location}", text=text)
