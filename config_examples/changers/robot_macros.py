"""Example macros (e.g. in a session's setup file) recording a robot's loads on the tracker.

For robots driven by the beamline's own macros, with no changer object for a ChangerLink to
follow. Each call leaves a robot-action record (start, end, SUCCESS/ERROR, message) and the
contract events; a macro that fails (or is interrupted with Ctrl-C) records an ERROR, puts the
tracker in CONFLICT and re-raises: the tracker never believes a failed mount happened.

    robot_actions(tracker, 10)   # the last records, newest first
"""

from bliss import setup_globals

from bliss_sampletrack.changers.macros import mounting, tracked_mount, tracked_unmount, unmounting
from bliss_sampletrack.changers.robot_actions import robot_actions

__all__ = ["load", "load_by_barcode", "load_and_read", "unload", "swap", "robot_actions"]


# The decorator form: the tracker by name (looked up when the macro runs), the barcode from the
# first parameter, the changer address from the parameter `where`.
@tracked_mount("tracker", address="where", changer="flex")
def load_by_barcode(barcode: str, where: str) -> None:
    """load_by_barcode("LYS-0042", "3:05"): load the pin at 3:05, which should be LYS-0042."""
    puck, position = (int(x) for x in where.split(":"))
    setup_globals.flex.load(puck, position)


# The robot reads the pin's datamatrix itself: the returned code identifies the sample.
@tracked_mount("tracker", sample=None, address="where", changer="flex", from_result=True)
def load_and_read(where: str) -> str:
    puck, position = (int(x) for x in where.split(":"))
    setup_globals.flex.load(puck, position)
    return setup_globals.flex.read_datamatrix()


@tracked_unmount("tracker", changer="flex")
def unload() -> None:
    setup_globals.flex.unload()


# The context-manager form, for macros that do more than one thing.
def load(barcode: str, puck: int, position: int) -> None:
    tracker = setup_globals.tracker
    with mounting(tracker, barcode, changer="flex", address=f"{puck}:{position:02d}") as action:
        setup_globals.flex.load(puck, position)
        if not setup_globals.flex.sample_detected:
            # raising inside the block records the ERROR (message below) and re-raises
            raise RuntimeError(f"flex reports {puck}:{position:02d} loaded but detects no pin")
        action.message = "centred by loop detection"  # a note on the SUCCESS record


def swap(barcode: str, puck: int, position: int) -> None:
    """Unload whatever is mounted, then load the next pin: two records, two pairs of events."""
    with unmounting(setup_globals.tracker, changer="flex"):
        setup_globals.flex.unload()
    load(barcode, puck, position)
