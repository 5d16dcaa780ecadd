"""A sample registry backed by the ICAT+ parcels of the current proposal (ESRF sample tracking).

Users declare what they ship in ICAT+: parcel -> containers (pucks) -> sample items. For the
proposal of the ESRF data policy, :class:`IcatPlusRegistry` reads the investigation's parcels,
flattens them and resolves a barcode (:meth:`~IcatPlusRegistry.resolve`) or a sample changer
address (:meth:`~IcatPlusRegistry.resolve_location`) to a :class:`Sample`: name, ICAT sample id,
parcel id/name, container id/name, position in the container. Those fill the event and the ICAT
dataset fields ``SampleTrackingParcel_*`` and ``SampleTrackingContainer_*``.

The modules, each with its caveats in its docstring:

- :mod:`.client`: talking to ICAT+ (what is asked, ``requests`` or pyicat-plus and the quirks of
  pyicat-plus's answers, TLS, the login and the session id, the investigation's choice);
- :mod:`.parcels`: parcel -> container -> sample flattening (``_id``/``id``, numbers as text),
  indexing the samples by barcode field and by changer address;
- :mod:`.cache`: the flattened parcels cached in the beacon Redis per beamline and proposal;
- :mod:`.registry`: :class:`IcatPlusRegistry` (resolve, refresh, prefetch, staleness, secrets);
- :mod:`.config`: the ``type: icatplus`` item of a tracker's ``registries:`` list;
- :mod:`.errors`: :class:`IcatPlusUnavailable` and the package's internal errors.

Secrets (password, session id, API key) never appear in ``repr``, ``describe()``, this package's
logs or exceptions: texts derived from a request have them replaced by ``***``, and urllib3's
loggers get the same filter as the ICAT+ delivery client.

Configuration: one item of the tracker's ``registries:`` list, ``type: icatplus`` (see
config_examples/tracker/icatplus_registry.yml and :meth:`IcatPlusRegistry.from_config`).
"""

from bliss_sampletrack.tracker.icatplus.cache import KEY_PREFIX, ParcelCache
from bliss_sampletrack.tracker.icatplus.client import Credentials, pyicatplus_has_parcels
from bliss_sampletrack.tracker.icatplus.config import DEFAULT_CACHE_TTL, DEFAULT_TIMEOUT
from bliss_sampletrack.tracker.icatplus.errors import IcatPlusUnavailable
from bliss_sampletrack.tracker.icatplus.parcels import flatten
from bliss_sampletrack.tracker.icatplus.registry import (
    RETRY_AFTER,
    IcatPlusRegistry,
    Resolution,
    current_proposal,
    resolve_location,
)

__all__ = [
    "DEFAULT_CACHE_TTL",
    "DEFAULT_TIMEOUT",
    "KEY_PREFIX",
    "RETRY_AFTER",
    "Credentials",
    "IcatPlusRegistry",
    "IcatPlusUnavailable",
    "ParcelCache",
    "Resolution",
    "current_proposal",
    "flatten",
    "pyicatplus_has_parcels",
    "resolve_location",
]
