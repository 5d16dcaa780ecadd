"""Registering the sample tag as BLISS user scan metadata (category ``sample``), safely.

BLISS calls each registered callable at the scan's START and END and deep-merges the returned
dict into ``scan_info["sample"]``; the HDF5 writer turns it into ``/<scan>.1/sample``. Caveats
handled here:
- ``sample`` is not a default category in BLISS 2.4: it is added.
- A callable that raises is only logged by BLISS, and the category silently disappears: the
  wrapper below never raises; it puts the failure in the tag itself and logs it.
- BLISS 2.0.3's ``_ScanMetaCategory.remove()`` raises AttributeError after removing the last
  entry of a category: the entry is popped from ``metadata`` instead.
- An unsaved ``ct`` records no user metadata at all (BLISS design): nothing to tag there.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.tagging.scan_tag import end_of_scan_tag, failure_tag

log = logging.getLogger(__name__)

CATEGORY = "sample"
#: the tag now; ``start``: at the scan's START (else its END)
TagFunction = Callable[..., dict[str, Any]]
#: what was recorded between two sequence numbers (the tracker's ``changes_between``)
ChangesFunction = Callable[[int, int], list[str]]


class ScanTagger:
    """The callable BLISS calls at each scan's START and END for the ``sample`` category."""

    def __init__(self, tracker: str, make_tag: TagFunction, changes: ChangesFunction | None = None) -> None:
        self.tracker = tracker
        self.make_tag = make_tag
        self.changes = changes
        self._starts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self.failures = 0

    @property
    def running(self) -> bool:
        """A scan has had its START tag and not yet its END one."""
        return len(self._starts) > 0

    def __call__(self, scan: Any) -> dict[str, Any]:
        start = self._starts.pop(scan, None)
        if start is None:  # START: kept (even a failure tag) until the END pops it
            self._starts[scan] = tag = self._guarded(scan, self._start_tag)
            return tag
        return self._guarded(scan, lambda: self._end_tag(start))

    def _start_tag(self) -> dict[str, Any]:
        return self.make_tag(start=True)

    def _end_tag(self, start: dict[str, Any]) -> dict[str, Any]:
        tag = self.make_tag(start=False)
        first, last = start.get("@seq"), tag.get("@seq")
        between = None
        if self.changes is not None and isinstance(first, int) and isinstance(last, int) and last > first:
            between = self.changes(first, last)
        return end_of_scan_tag(start, tag, between)

    def _guarded(self, scan: Any, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return make()
        # broad on purpose: BLISS would drop the category silently; the tag and the log say it instead
        except Exception as exc:
            self.failures += 1
            log.exception(
                "sample tag of tracker %r failed for scan %r", self.tracker, getattr(scan, "name", scan)
            )
            return failure_tag(self.tracker, exc)


def install(tagger: ScanTagger) -> None:
    """Register ``tagger`` for every scan of the current session (START and END)."""
    from bliss.scanning.scan_meta import META_TIMING, ScanMeta, get_user_scan_meta

    if CATEGORY not in ScanMeta.categories_names():
        ScanMeta.add_categories([CATEGORY])
    category = get_user_scan_meta().sample
    others = [key for key in category.keys if key != tagger.tracker]
    if others:
        raise ConfigurationError(
            f"tracker {tagger.tracker!r}: scans are already tagged with a sample by {others}; only one "
            "tracker per session can own scan_info['sample'] (set 'tag_scans: false' on the other ones)"
        )
    category.set(tagger.tracker, tagger)
    category.timing = META_TIMING.START | META_TIMING.END


def uninstall(tracker: str) -> None:
    from bliss.scanning.scan_meta import get_user_scan_meta

    # not category.remove(): BLISS 2.0.3 raises after removing a category's last entry
    get_user_scan_meta().sample.metadata.pop(tracker, None)


def installed(tracker: str) -> bool:
    from bliss.scanning.scan_meta import ScanMeta, get_user_scan_meta

    return CATEGORY in ScanMeta.categories_names() and get_user_scan_meta().sample.is_set(tracker)
