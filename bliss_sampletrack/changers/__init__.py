"""Sample changers and robot macros: every mount and unmount they make, recorded on the tracker.

- :mod:`~bliss_sampletrack.changers.protocol`: the ``SampleChanger`` protocol and its events;
- :mod:`~bliss_sampletrack.changers.simulated`: ``SimulatedChanger`` (BLISS object, pucks, failures);
- :mod:`~bliss_sampletrack.changers.generic`: ``BlissObjectChanger``, any BLISS object by YAML names;
- :mod:`~bliss_sampletrack.changers.link`: ``ChangerLink``/``link_changer``, changer -> tracker;
- :mod:`~bliss_sampletrack.changers.crosscheck`: what each event means for the tracker (pure logic);
- :mod:`~bliss_sampletrack.changers.macros`: ``mounting``/``unmounting`` and their decorators;
- :mod:`~bliss_sampletrack.changers.robot_actions`: ISPyB-like ``RobotAction`` records in Redis.

This package's namespace imports no BLISS; ``simulated``, ``generic`` and ``link`` do (for the
shell's argument type checks), so import them from a BLISS session or after BLISS.

May import: ``readers``, ``core``, ``config_node``, ``errors`` (layers: pyproject's import-linter contract).
"""

from bliss_sampletrack.changers.errors import (
    ChangerBusyError,
    ChangerError,
    ChangerOfflineError,
    ChangerTimeout,
    MountFailedError,
)
from bliss_sampletrack.changers.protocol import (
    ChangerEvent,
    ChangerEventKind,
    Mounted,
    Position,
    SampleChanger,
)
from bliss_sampletrack.changers.robot_actions import ActionType, RobotAction, RobotActionLog, robot_actions

__all__ = [
    "ActionType",
    "ChangerBusyError",
    "ChangerError",
    "ChangerEvent",
    "ChangerEventKind",
    "ChangerOfflineError",
    "ChangerTimeout",
    "Mounted",
    "MountFailedError",
    "Position",
    "RobotAction",
    "RobotActionLog",
    "SampleChanger",
    "robot_actions",
]
