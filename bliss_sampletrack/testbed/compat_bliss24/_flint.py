"""Headless stand-in for ``flint.client.proxy`` and ``flint.client.plots``.

Flint, the BLISS GUI, is not on PyPI, yet BLISS >= 2.2 imports its client at session set-up
(``bliss.common.plot``, ``bliss.scanning.scan_saving.esrf``). Here there is never a Flint: every
query answers "none running", an optional request returns None, a mandatory one raises, and any plot
class (``flint_plots.LiveCurvePlot``...) is missing, which BLISS only looks up once it has a Flint.
"""

from __future__ import annotations

import logging

# bliss.common.plot re-exports these two loggers
FLINT_LOGGER = logging.getLogger("flint")
FLINT_OUTPUT_LOGGER = logging.getLogger("flint.output")

_NO_FLINT = "Flint is not installed (headless BLISS 2.4 test bed of bliss_sampletrack)"


def get_flint(*args: object, mandatory: bool = True, **kwargs: object) -> None:
    """``mandatory=False`` (as in ``Scan._check_flint_auto_start``) gets None, else RuntimeError."""
    if mandatory:
        raise RuntimeError(_NO_FLINT)
    return None


def check_flint() -> bool:
    """No Flint application is ever alive."""
    return False


def attach_flint(pid: int) -> None:
    raise RuntimeError(_NO_FLINT)


def restart_flint(creation_allowed: bool = True) -> None:
    """``creation_allowed=False`` (new dataset in ESRF scan saving) is a no-op, as with no Flint."""
    if creation_allowed:
        raise RuntimeError(_NO_FLINT)


def close_flint() -> None:
    """Nothing to close."""


reset_flint = close_flint


def __getattr__(name: str) -> object:
    # FlintClient, BasePlot, Live*Plot...: absent rather than faked
    raise AttributeError(f"{__name__} has no {name!r}: {_NO_FLINT}")
