"""Optional scan policy: refuse to start a scan when no sample is known to be mounted.

A BLISS ``ChainPreset`` added to the default acquisition chain: its ``prepare`` raises
:class:`~bliss_sampletrack.errors.ScanRefusedError` before any data is taken.

Caveat: the default chain serves the standard scans (``ct``, ``loopscan``, ``ascan``, ``dscan``,
``amesh``, ``timescan``...). A scan built on a custom acquisition chain bypasses the policy
(it is still tagged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bliss.scanning.chain import ChainPreset

from bliss_sampletrack.errors import ScanRefusedError


class RefuseScansPreset(ChainPreset):
    """Raise ``ScanRefusedError(problem())`` when ``problem()`` returns a message."""

    def __init__(self, problem: Callable[[], str | None]) -> None:
        super().__init__()
        self.problem = problem

    def prepare(self, chain: Any) -> None:
        message = self.problem()
        if message:
            raise ScanRefusedError(message)


def _default_chain() -> Any:
    from bliss.common.scans.step_by_step import DEFAULT_CHAIN

    return DEFAULT_CHAIN


def install(name: str, problem: Callable[[], str | None]) -> None:
    _default_chain().add_preset(RefuseScansPreset(problem), name=name)


def uninstall(name: str) -> None:
    _default_chain().remove_preset(name=name)  # no-op when absent
