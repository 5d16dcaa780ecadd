"""The errors of the ICAT+ registry: one public (:class:`IcatPlusUnavailable`, raised by
``refresh()`` and kept as the stale note otherwise), two that stay inside the package (a refused
session, which makes the registry log in again; a pyicat-plus quirk, which makes it ask again as
JSON).
"""

from __future__ import annotations

from bliss_sampletrack.errors import IcatPlusUnavailable as IcatPlusUnavailable  # the tree's (re-exported)


class AuthRefused(IcatPlusUnavailable):
    """ICAT+ answered 401/403: the session expired or the credentials are wrong."""


class Quirk(Exception):
    """pyicat-plus lost or refused part of the answer: read it again as JSON."""
