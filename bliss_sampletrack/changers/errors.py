"""The sample-changer errors: defined in :mod:`bliss_sampletrack.errors` (the one tree, with
what each means and what to do), re-exported here for the changer modules and macros."""

from bliss_sampletrack.errors import (
    ChangerBusyError,
    ChangerError,
    ChangerOfflineError,
    ChangerTimeout,
    MountFailedError,
)

__all__ = ["ChangerBusyError", "ChangerError", "ChangerOfflineError", "ChangerTimeout", "MountFailedError"]
