"""Manual input is checked, not taken on trust. Pure logic (no I/O).

What a scientist types (``tracker.mount("LYS-0042")``, ``tracker.unmount()``) is compared with
what the hardware says (the tracker's witnesses: a changer's bookkeeping, its presence sensor).
A manual operation that contradicts them follows the tracker's ``manual_policy``:

- ``conflict`` (default): recorded, with status ERROR and the contradiction as the message; the
  tracker goes CONFLICT (scans say so) until a source settles it;
- ``refuse``: nothing recorded; the error names both sides and how to proceed;
- ``trust``: recorded as SUCCESS, the contradiction kept in the event's message.

``force=True`` records a refused operation as ``trust`` would (the contradiction is still
written into the event). Text that is no barcode is refused with its own message whatever the
policy: a reader's no-read word (``ERROR``, ``NOREAD``: never a sample, cannot be forced) and an
address such as ``1:01`` (a changer position, not a pin's identity; ``force=True`` takes it as a
barcode if a pin really carries that label).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from bliss_sampletrack.core import Status
from bliss_sampletrack.core.barcode import is_no_read
from bliss_sampletrack.errors import MountRefusedError, NoReadError

POLICIES: Final = ("conflict", "refuse", "trust")
#: a changer position as typed (``3:05``, ``3:5``): never taken for a barcode unless forced
_ADDRESS = re.compile(r"^\s*\d{1,3}\s*:\s*\d{1,3}\s*$")


@dataclass(frozen=True, slots=True)
class Verdict:
    """How to record a manual operation: its status and the event's message."""

    status: Status = Status.SUCCESS
    message: str = ""


def check_code(tracker: str, text: str, *, no_read: tuple[str, ...] = (), force: bool = False) -> None:
    """Refuse typed text that is a no-read word, or (unless ``force``) a changer address."""
    if is_no_read(text, no_read):
        shown = text.strip() or "an empty string"
        raise NoReadError(
            f"{shown!r} is what a barcode reader answers when it reads nothing; it is never a sample's "
            f"barcode. Type the code printed on the pin, or give a name: {tracker}.mount(name='...')",
            raw=text,
        )
    if not force and _ADDRESS.fullmatch(text):
        raise MountRefusedError(
            f"{text!r} looks like a changer position, not a barcode: mount through the changer "
            f"(e.g. sc.mount({text!r})), or type the pin's barcode. If a pin really carries the label "
            f"{text!r}: {tracker}.mount({text!r}, force=True)"
        )


def verdict(tracker: str, policy: str, what: str, problem: str | None, *, force: bool = False) -> Verdict:
    """The status and message of a manual ``what`` ("mount of X", "unmount") given the hardware's
    ``problem`` with it (None: nothing contradicts it). Raises MountRefusedError under ``refuse``."""
    if problem is None:
        return Verdict()
    if force or policy == "trust":
        return Verdict(Status.SUCCESS, f"manual {what} trusted over the hardware: {problem}")
    if policy == "refuse":
        raise MountRefusedError(
            f"manual {what} refused: {problem}. Check the goniometer; then use the changer, fix the "
            f"hardware, or record it anyway with force=True (the contradiction is kept in the event)"
        )
    return Verdict(Status.ERROR, f"manual {what} contradicts the hardware: {problem}")
