"""The import hook behind the layer: serve stand-in modules, patch one real module after it loads.

A meta-path finder (rather than filling ``sys.modules`` up front) keeps the layer lazy: nothing
of BLISS, blisswriter or blissdata is imported when it is installed, so ``import bliss`` still
comes first and gevent-monkey-patches before anything imports ``blissdata.streams``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

Patch = Callable[[ModuleType], None]


class _EmptyPackage(importlib.abc.Loader):
    """A package with no code, so that ``import flint.client.proxy`` can reach the leaf."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__doc__ = "Stand-in package of the bliss_sampletrack test bed (compat_bliss24)."


class _Alias(importlib.abc.Loader):
    """The module registered under the missing name is an existing module, imported on demand."""

    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self._target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its own name


class _PatchAfterExec(importlib.abc.Loader):
    """Run the real loader, then ``patch`` the freshly executed module."""

    def __init__(self, loader: importlib.abc.Loader, patch: Patch) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._patch(module)


class CompatFinder(importlib.abc.MetaPathFinder):
    """``packages``: empty packages; ``aliases``: missing name -> module to serve in its place;
    ``patches``: real module name -> function applied once the real module has executed."""

    def __init__(self, packages: set[str], aliases: dict[str, str], patches: dict[str, Patch]) -> None:
        self.packages = packages
        self.aliases = aliases
        self.patches = patches

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.packages:
            return importlib.machinery.ModuleSpec(fullname, _EmptyPackage(), is_package=True)
        if fullname in self.aliases:
            return importlib.machinery.ModuleSpec(fullname, _Alias(self.aliases[fullname]))
        patch = self.patches.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchAfterExec(spec.loader, patch)
        return spec

    def install(self) -> None:
        """First on ``sys.meta_path`` (the patches must see the real module before PathFinder
        loads it); a module already imported gets its patch applied at once."""
        sys.meta_path.insert(0, self)
        for name, patch in self.patches.items():
            if name in sys.modules:
                patch(sys.modules[name])
