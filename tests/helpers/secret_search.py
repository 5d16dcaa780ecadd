"""Searching artefacts for secrets: texts, files (HDF5 through h5py too) and every key of a Redis
database. Used by test_security_secrets.py (one tracker's artefacts) and test_demo.py (the full
demo's)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h5py


def secret_forms(label: str, value: str) -> dict[str, str]:
    """The secret as written, URL-encoded, and (a service token) its secret part alone."""
    forms = {label: value, f"{label} (URL-encoded)": quote(value, safe="")}
    if value.startswith("stk_") and value.count("_") >= 2:
        forms[f"{label} (secret part)"] = value.split("_", 2)[2]
    return forms


def text_hits(secrets: dict[str, str], where: str, text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return [f"{label} in {where}" for label, value in secrets.items() if value.encode() in data]


def file_hits(secrets: dict[str, str], root: Path, skip: Iterable[Path] = ()) -> tuple[list[str], int]:
    """Every file under ``root`` (raw bytes; HDF5 files also through h5py, whose chunks may be
    compressed); returns the hits and how many files were read."""
    skipped = {p.resolve() for p in skip}
    hits: list[str] = []
    count = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.resolve() in skipped:
            continue
        count += 1
        hits += text_hits(secrets, str(path), path.read_bytes())
        if path.suffix in (".h5", ".hdf5", ".nx", ".nxs"):
            for where, text in hdf5_texts(path):
                hits += text_hits(secrets, where, text)
    return hits, count


def _h5_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "dtype") and value.dtype.kind in "SOU":
        return " ".join(_h5_text(v) for v in value.ravel().tolist())
    return str(value)


def hdf5_texts(path: Path) -> Iterator[tuple[str, str]]:
    """Every name, attribute and string dataset of an HDF5 file, as text."""
    with h5py.File(path, "r", locking=False) as h5:
        items: list[tuple[str, Any]] = [("/", h5)]
        h5.visititems(lambda name, obj: items.append((name, obj)))
        for name, obj in items:
            where = f"{path}:{name}"
            yield where, name
            for key, value in obj.attrs.items():
                yield f"{where}@{key}", f"{key}={_h5_text(value)}"
            if isinstance(obj, h5py.Dataset) and (obj.dtype.kind in "SOU" or obj.size <= 64):
                yield where, _h5_text(obj[()])


def redis_texts(url: str) -> Iterator[tuple[str, bytes]]:
    """Every key of a Redis database with its value, whatever the type (RedisJSON included)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            name = key.decode("utf-8", "replace")
            if kind == "string":
                value = [client.get(key)]
            elif kind == "hash":
                value = [x for pair in client.hgetall(key).items() for x in pair]
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = list(client.smembers(key))
            elif kind == "zset":
                value = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                value = [x for _, fields in client.xrange(key) for pair in fields.items() for x in pair]
            elif kind == "ReJSON-RL":
                value = [client.execute_command("JSON.GET", key)]
            else:
                value = [client.dump(key)]
            yield f"{url} {kind} {name}", key + b"\n" + b"\n".join(v for v in value if isinstance(v, bytes))
    finally:
        client.close()


def redis_hits(secrets: dict[str, str], url: str) -> tuple[list[str], set[str]]:
    hits: list[str] = []
    keys = set()
    for where, data in redis_texts(url):
        keys.add(where.split(" ", 2)[2])
        hits += text_hits(secrets, where, data)
    return hits, keys
