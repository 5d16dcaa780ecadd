"""Errors of the sample-changer part, under :class:`~bliss_sampletrack.errors.SampleTrackError`.

::

    SampleTrackError
    └── ChangerError                 a sample changer refused or failed a command (names the changer)
        ├── ChangerBusyError         another load/unload is still running
        ├── MountFailedError         a load or unload started and failed (dropped pin, robot fault)
        ├── ChangerTimeout           a load or unload did not finish in time
        └── ChangerOfflineError      the changer (or the BLISS object behind it) cannot be read

A command refused *before* anything moved (unknown address, empty position, a pin already on
the goniometer) is a plain :class:`ChangerError`: nothing is recorded for it. Once the robot
moves, a failure is recorded (robot action ``ERROR``, tracker ``CONFLICT``) before it is raised.
"""

from __future__ import annotations

from bliss_sampletrack.errors import SampleTrackError


class ChangerError(SampleTrackError):
    """A sample changer refused or failed a command; the message names the changer."""


class ChangerBusyError(ChangerError):
    """A load or unload is already running on this changer."""


class MountFailedError(ChangerError):
    """A load or unload started and failed midway (the robot moved: it was recorded).

    ``reason`` is the failure alone ("the pin was dropped midway"), for records that say the
    rest (which changer, which action) themselves.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ChangerTimeout(MountFailedError):
    """A load or unload did not finish within its timeout (the robot's state is unknown)."""


class ChangerOfflineError(ChangerError):
    """The changer, or the BLISS object behind an adapter, could not be read."""
