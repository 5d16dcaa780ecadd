"""Import-time compatibility layer that lets BLISS 2.4.0, as published on PyPI, run a scan.

Test bed only: the plugin's runtime never imports this package. BLISS 2.4.0 imports modules
that no PyPI release provides; :func:`install_if_needed` fills exactly these gaps, each only
when the real module is missing and the installed BLISS imports it (read from package metadata):

1. ``blisswriter.mapping`` (BLISS >= 2.4 imports it; blisswriter 2.0.0 lacks it), served lazily:

   - ``.devices``: ``all_devices_info`` and ``get_primary_dataset_path``, aliases of
     blisswriter 2.0.0's ``blisswriter.nexus.devices.device_info`` and
     ``blisswriter.nexus.mapping.get_primary_dataset_path``;
   - ``.h5map``: ``scan_info_to_h5map`` raises NotImplementedError, which BLISS tolerates for
     every writer but "mapping";
   - ``.scan_url_info``: blisswriter 2.0.0's ``blisswriter.writer.scan_url_info`` itself;
   - ``.publish``: a short local copy of the writer's metadata generators (see ``_publish``).

2. ``blisswriter.writer.main.ScanWriterWithState.initialize``, patched with the mapping above:
   BLISS 2.4.0 calls ``initialize(scan_info)``, blisswriter 2.0.0 requires
   ``initialize(scan_info, data_store)``; the patch passes BLISS's default data store.

3. ``flint``, ``flint.client``, ``flint.client.proxy``, ``flint.client.plots`` (BLISS >= 2.2
   imports the Flint GUI client, which is not on PyPI): headless stand-ins that report that
   no Flint is running (see ``_flint``).

Nothing else is covered (no ``gi``/Hkl, no Lima/MCA device info, no "mapping" writer).
On a complete BLISS (e.g. 2.0.3, which imports neither) it installs nothing and logs nothing;
otherwise it logs one WARNING line naming what it installed.

When to call: before ``bliss.common.session``/``bliss.scanning`` (or anything that imports
``flint`` or ``blisswriter.mapping``) is imported; calling it first thing, before ``import
bliss``, is simplest. It imports no BLISS, blisswriter or blissdata module itself (only the
``blisswriter`` package's ``__init__``, a version string), so it does not disturb the rule that
``import bliss`` (gevent monkey-patching) must precede any import of ``blissdata.streams``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging
from types import ModuleType
from typing import Any

from bliss_sampletrack.testbed.compat_bliss24._finder import CompatFinder

log = logging.getLogger(__name__)

__all__ = ["install_if_needed"]

_HERE = __name__
_installed: list[str] | None = None


def _bliss_version() -> tuple[int, int] | None:
    """(major, minor) of the installed BLISS distribution, read without importing it."""
    try:
        major, minor = importlib.metadata.version("bliss").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _missing(name: str) -> bool:
    """True when ``name`` cannot be imported (its parent package, if any, must exist)."""
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # the parent package is missing too
        return True


def _pass_default_data_store(module: ModuleType) -> None:
    """Give ``ScanWriterWithState.initialize`` the data store that blisswriter 2.0.0 requires."""
    cls = module.ScanWriterWithState
    original = cls.initialize
    if inspect.signature(original).parameters["data_store"].default is not inspect.Parameter.empty:
        return  # a blisswriter that does not require it

    def initialize(self: Any, scan_info: dict[str, Any], data_store: Any = None) -> bool:
        if data_store is None:
            from bliss.common.data_store import get_default_data_store

            data_store = get_default_data_store()
        return bool(original(self, scan_info, data_store))

    initialize.__doc__ = original.__doc__
    cls.initialize = initialize


def install_if_needed() -> list[str]:
    """Install what this BLISS lacks (see the module docstring); return the names patched.

    Returns ``[]`` on a complete BLISS. Idempotent: later calls return the first call's list.
    """
    global _installed
    if _installed is not None:
        return list(_installed)
    version = _bliss_version() or (0, 0)
    finder = CompatFinder(packages=set(), aliases={}, patches={})
    # 1 and 2: BLISS 2.4 expects an unreleased blisswriter; 2.0.0's blisswriter.nexus fills in for
    # it (without blisswriter.nexus there is nothing to alias, and BLISS keeps its own ImportError)
    if version >= (2, 4) and _missing("blisswriter.mapping") and not _missing("blisswriter.nexus"):
        finder.packages.add("blisswriter.mapping")
        finder.aliases.update(
            {
                "blisswriter.mapping.devices": f"{_HERE}._mapping",
                "blisswriter.mapping.h5map": f"{_HERE}._mapping",
                "blisswriter.mapping.publish": f"{_HERE}._publish",
                "blisswriter.mapping.scan_url_info": "blisswriter.writer.scan_url_info",
            }
        )
        finder.patches["blisswriter.writer.main"] = _pass_default_data_store
    # 3: BLISS >= 2.2 imports Flint's client as the separate package `flint` (2.0 bundled it)
    if version >= (2, 2) and _missing("flint"):
        finder.packages.update({"flint", "flint.client"})
        finder.aliases.update({f"flint.client.{leaf}": f"{_HERE}._flint" for leaf in ("proxy", "plots")})
    patched = sorted(finder.packages | finder.aliases.keys())
    patched += [f"{name}.ScanWriterWithState.initialize" for name in finder.patches]
    if patched:
        finder.install()
        log.warning(
            "BLISS %s lacks modules; test-bed compatibility layer installed: %s",
            importlib.metadata.version("bliss"),
            ", ".join(patched),
        )
    _installed = patched
    return list(patched)
