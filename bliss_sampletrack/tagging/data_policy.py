"""The ESRF data policy (proposal / collection / dataset, ICAT dataset fields) on BLISS 2.0.3 and 2.4.

The only module of the plugin that touches BLISS's data-policy objects: every difference between
the supported BLISS versions stays here. Everything takes the BLISS session explicitly.

Reading and writing (the plugin's runtime uses only these):

- :func:`current_session` (None outside a session), :func:`policy_active`, :func:`proposal_name`,
  :func:`dataset_name` (these three accept ``bliss.current_session``, a proxy, see
  :func:`real_session`);
- :func:`set_dataset_fields` (ICAT fields of the current dataset, ``None`` removes one),
  :func:`dataset_fields` (what the current dataset holds now);
- :func:`new_dataset` (close the current dataset, which freezes its fields, and start a new one);
- :func:`snapshot_fields` (the fields recorded in a finished scan's ``scan_info``);
- :func:`before_scan` (a hook run in each new scan's own greenlet, before BLISS fixes its dataset).

When to switch datasets and set fields: never from a greenlet of its own (a changer's action, a
reader follower) while a scan may be starting. BLISS fixes a scan's paths and dataset in
``Scan.__init__`` (``scan_saving.clone()``, then ``scan_saving.get()``), uses that Dataset object
at ``Scan.run`` (``on_scan_run``: "Dataset is already closed" if it was closed meanwhile), and
copies its fields into ``dataset_metadata_snapshot`` after the chain's presets; on 2.4 the
clone even writes back the fields it read, undoing a ``newdataset`` that interleaves with it.
The one point in both versions that runs in the scan's greenlet before all of that is
``ESRFScanSaving.clone``: :func:`before_scan` hooks run there (measured in BLISS 2.0.3
``scan.py`` 471/505/1456-1484 and 2.4 ``scan.py`` 538/559/1573-1602).

Switching the policy on and off headless, for tests and the demo (a real beamline enables it in
its beacon configuration, ``scan_saving: class: ESRFScanSaving``):

- :func:`enable_policy`, :func:`disable_policy`, and :func:`policy_enabled`, a context manager
  that puts the session back as it found it.

How BLISS does it, per version (2.0.3 = ``.venv``, 2.4.0 = ``.venv-bliss2.4``):

- Scan saving classes: 2.0.3 module ``bliss.scanning.scan_saving`` (``BasicScanSaving``,
  ``ESRFScanSaving``, Redis parameters ``parameters:esrf_scan_saving:<session>``); 2.4 package
  ``bliss.scanning.scan_saving`` (``.base.BasicScanSaving``, ``.esrf.ESRFScanSaving``, Redis key
  ``scan_saving:esrf:<session>``). In both, ``Session.enable_esrf_data_policy()`` /
  ``disable_esrf_data_policy()`` swap the class behind ``session.scan_saving`` (a proxy: use
  ``scan_saving.data_policy == "ESRF"``, not ``type()``), and each class keeps its own Redis
  state, so the basic ``base_path`` survives a round trip through the ESRF policy.
- ICAT objects: 2.0.3 ``bliss.icat.{client,policy,dataset,dataset_collection,proposal}``, client
  ``scan_saving.icat_client``; 2.4 ``bliss.lims.esrf.{client,policy,dataset,...}``, client
  ``scan_saving.lims_client`` (``icat_client`` kept as an alias). Both disable the client (a null
  client, no network) when the beacon root has no ``icat_servers`` or ``icat_servers: disable:
  true`` (``bliss.icat.client.icat_client_is_disabled`` / ``bliss.lims.esrf.client.
  lims_client_is_disabled``), and always for a proposal of type ``tmp``. No Tango metadata
  manager exists in either version; ``icat-metadata`` (session YAML) is optional.
- Configuration: both read the scan saving configuration live from the in-memory static config
  (the session's ``scan_saving`` node, else the root's): ``beamline``, ``inhouse_data_root``,
  ``visitor_data_root``, ``tmp_data_root`` (and ``icat_*`` variants; defaults ``/data/...``).
  :func:`enable_policy` sets them in memory, as BLISS's own test utilities do, so a test or
  demo run keeps its data under its own folder; other processes do not see that override.
- Writer: the ESRF class defaults to writer ``"nexus"`` (the external Tango NeXus writer, which
  a headless run lacks: the scan fails at once with ``API_TangoHostNotSet``); :func:`enable_policy`
  selects the in-process ``"hdf5"`` writer by default.
- ICAT field names: BLISS validates names against the ICAT definitions of its ``pyicat_plus``.
  2.0.3 has pyicat_plus 0.1.10, whose definitions lack every ``SampleChanger_*`` and
  ``SampleTracking*`` field (``dataset["SampleChanger_name"] = ...`` raises KeyError "... is not a
  valid ICAT field"); 2.4 (pyicat_plus 3.1, icat-esrf-definitions 3.8) knows all of them. This
  module therefore sets, of the plugin's own fields (``ICAT_SAMPLE_FIELDS``), only those the
  installed definitions accept (:func:`supported_sample_fields`, found once per session), and
  says once, in one log line, which it leaves out: a field the definitions lack would make the
  HDF5 writer log ``"<field> not a valid ICAT field"`` at every scan and ICAT drop it anyway. The
  values left out stay in each scan's sample tag (``scan_info["sample"]``, the NXsample group).
  Any other name is validated by BLISS.
- Snapshot: at scan preparation, when ``scan_saving.data_policy == "ESRF"`` (saved or not), both
  versions copy ``scan_saving.dataset.get_current_icat_metadata()`` into
  ``scan_info["dataset_metadata_snapshot"]`` (same key; also in Redis through blissdata). The
  in-process HDF5 writer puts the ``Sample*`` fields of the snapshot into ``/<n>.1/sample``:
  2.4 writes them all (``sample/changer/name``, ``sample/tracking/container/id``...); 2.0.3 writes
  only those its definitions know (``sample/name``) and logs ``"<field> not a valid ICAT field"``
  (pyicat_plus.metadata.nexus) for each of the others, at every scan.
- ``Sample_name``: a dataset's fields are its own plus, until it is closed, those of its
  collection (and proposal); its own win. A new collection starts with ``Sample_name =`` the
  collection name; ``newcollection(name, sample_name=X)`` / ``newsample(name)`` set the
  collection's; ``newdataset(name, sample_name=X)`` sets the dataset's own, exactly what
  :func:`set_dataset_fields` writes (the last write wins). Removing it from the dataset (``None``)
  therefore does not remove it from the scan: the collection's value shows again. Same in both
  versions (ICAT requires a ``Sample_name``: pyicat_plus refuses to register a dataset without).
- Closing: a dataset closes (its inherited fields are frozen into it, ``endDate`` and a technique
  ``definition`` are added: 2.0.3 ``"UNKNOWN"``, 2.4 ``"XRAYS"`` with ``technique_pid``) when
  another dataset, collection or proposal is selected, and only if its folder exists (some scan
  was saved). BLISS picks the first name whose folder does not exist (nor is reserved by another
  session): after an empty dataset, :func:`new_dataset` with the same name, or with None after an
  empty numbered dataset, gives that same dataset back, fields included (both versions).
- Metadata gathering (``icat-metadata`` controllers, none in the demo): 2.0.3 ``newdataset``
  gathers at once, 2.4 at the first saved scan of the dataset.
- Blocking: 2.0.3 ``ESRFScanSaving._close_proposal`` (``newproposal`` to another proposal,
  ``endproposal``) polls ICAT for up to 10 s (gevent.sleep) when the proposal has closed
  datasets, and with the null client they are never confirmed: a proposal change after saved
  scans takes 10 s on 2.0.3. 2.4 skips that wait for a null client. Nothing in this module
  changes the proposal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bliss_sampletrack.errors import ConfigurationError, SampleTrackError
from bliss_sampletrack.tagging.icat_fields import ICAT_SAMPLE_FIELDS

if TYPE_CHECKING:
    from bliss.common.session import Session

log = logging.getLogger(__name__)

#: the ``scan_info`` key (BLISS 2.0.3 and 2.4) holding the dataset's ICAT fields at scan start
SNAPSHOT_KEY = "dataset_metadata_snapshot"
#: scan saving configuration keys that :func:`enable_policy` accepts as ``**roots``
ROOT_KEYS = (
    "inhouse_data_root",
    "visitor_data_root",
    "tmp_data_root",
    "icat_inhouse_data_root",
    "icat_visitor_data_root",
    "icat_tmp_data_root",
)
#: the in-process writer; the ESRF default "nexus" needs a Tango NeXus writer server
HEADLESS_WRITER = "hdf5"

_MISSING = object()


# --- reading --------------------------------------------------------------------------------------


def real_session(session: Any) -> Session | None:
    """``session`` itself, or None when it is ``bliss.current_session`` outside a session.

    ``bliss.current_session`` is a proxy (``bliss.common.proxy.Proxy``): ``is None`` is never true
    of it, even when no session is open, and its attributes then raise AttributeError. Its
    ``__wrapped__`` is the session, or None (BLISS 2.0.3 and 2.4).
    """
    if session is None:
        return None
    return getattr(session, "__wrapped__", session)  # type: ignore[no-any-return]


def current_session() -> Session | None:
    """The current BLISS session, or None outside one (a script or a process with no session)."""
    from bliss import current_session as proxy

    return real_session(proxy)


def policy_active(session: Session | None) -> bool:
    """True when ``session`` saves scans under the ESRF data policy (``ESRFScanSaving``).

    ``session`` may be ``bliss.current_session`` (a proxy, see :func:`real_session`)."""
    session = real_session(session)
    if session is None:
        return False
    return getattr(session.scan_saving, "data_policy", None) == "ESRF"


def proposal_name(session: Session | None) -> str | None:
    """The current proposal, or None without the policy.

    Caveat: when no proposal was ever chosen, BLISS selects (and creates in Redis) its default
    ``<beamline><yymm>`` on this first read, in both versions.
    """
    session = real_session(session)
    if not policy_active(session):
        return None
    assert session is not None
    name = session.scan_saving.proposal_name
    return str(name) if name else None


def dataset_name(session: Session | None) -> str | None:
    """The current dataset's name (e.g. ``"0001"``, or ``"ds"`` for ``newdataset("ds")``).

    The dataset's folder is ``<collection>_<dataset>``. None without the policy, or when BLISS 2.4
    has not chosen a dataset yet (2.0.3 chooses its default on this read).
    """
    session = real_session(session)
    if not policy_active(session):
        return None
    assert session is not None
    name = session.scan_saving.dataset_name
    return str(name) if name else None


def dataset_path(session: Session | None) -> str | None:
    """``proposal/collection/dataset`` of the current dataset (names repeat across collections),
    or None without the policy."""
    session = real_session(session)
    if not policy_active(session):
        return None
    assert session is not None
    scan_saving = session.scan_saving
    return f"{scan_saving.proposal_name}/{scan_saving.collection_name}/{scan_saving.dataset_name}"


def collection_sample_name(session: Session) -> str | None:
    """The current collection's ``Sample_name``: the scientist's naming (``newsample(name)``,
    ``newcollection(name, sample_name=)``; BLISS's default is the collection's own name), or None
    without a collection. Same attribute in 2.0.3 and 2.4."""
    collection = _policy_scan_saving(session).collection
    if collection is None:
        return None
    name = collection.sample_name
    return str(name) if name else None


def dataset_fields(session: Session) -> dict[str, Any]:
    """All ICAT fields of the current dataset now: its own and, until it closes, its parents'."""
    return dict(_current_dataset(session).get_current_icat_metadata())


def snapshot_fields(scan_info: Mapping[str, Any], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ICAT dataset fields recorded when the scan started (``scan_info[SNAPSHOT_KEY]``).

    ``scan_info`` is ``scan.scan_info`` or blissdata's ``load_scan(key).info``. ``names`` keeps
    only those fields (e.g. ``ICAT_SAMPLE_FIELDS``). Returns ``{}`` for a scan that ran without
    the policy. Caveat: the snapshot is taken once, at scan preparation; a change made while the
    scan runs shows in the next scan only.
    """
    snapshot = scan_info.get(SNAPSHOT_KEY) or {}
    if names is None:
        return dict(snapshot)
    return {key: value for key, value in snapshot.items() if key in names}


# --- writing --------------------------------------------------------------------------------------


#: session name -> the plugin's fields its ICAT definitions accept (found once per session)
_SUPPORTED: dict[str, tuple[str, ...]] = {}


def supported_sample_fields(session: Session) -> tuple[str, ...]:
    """The plugin's ICAT fields (``ICAT_SAMPLE_FIELDS``) that this BLISS's ICAT definitions
    accept; the first call per session logs, once, which are left out."""
    known = _SUPPORTED.get(session.name)
    if known is None:
        dataset = _current_dataset(session)
        known = tuple(name for name in ICAT_SAMPLE_FIELDS if _bliss_knows(dataset, name))
        _SUPPORTED[session.name] = known
        left_out = [name for name in ICAT_SAMPLE_FIELDS if name not in known]
        if left_out:
            log.warning(
                "session %r: the ICAT definitions of this BLISS (pyicat-plus %s) have no field %s: "
                "not set on datasets; each scan's sample tag (scan_info['sample'], the HDF5 NXsample "
                "group) still carries these values",
                session.name,
                _pyicat_plus_version(),
                ", ".join(left_out),
            )
    return known


def _pyicat_plus_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyicat-plus")
    except PackageNotFoundError:
        return "not installed"


def set_dataset_fields(session: Session, fields: Mapping[str, str | None]) -> None:
    """Set ICAT fields on the current dataset; ``None`` removes a field from it.

    Names: the plugin's sample fields (``ICAT_SAMPLE_FIELDS``: those the installed definitions
    lack are left out, see :func:`supported_sample_fields`) or any name BLISS's ICAT definitions
    accept. Every name is
    checked before anything is written: an unknown one raises
    :class:`~bliss_sampletrack.errors.ConfigurationError` (a ValueError) naming it, and nothing
    changes. A value that is neither str nor None raises TypeError.

    Caveats: the fields belong to the dataset, not to a scan: every later scan of the dataset
    records them, until :func:`new_dataset`. Removing ``Sample_name`` reveals the collection's
    ``Sample_name`` (see the module docstring). The dataset is created in Redis if needed.

    Raises :class:`~bliss_sampletrack.errors.SampleTrackError` without the policy, or when the
    current dataset is already closed.
    """
    dataset = _current_dataset(session)
    unknown = [name for name in fields if name not in ICAT_SAMPLE_FIELDS and not _bliss_knows(dataset, name)]
    if unknown:
        raise ConfigurationError(
            f"unknown ICAT dataset field(s) {', '.join(map(repr, unknown))}: expected one of "
            f"{', '.join(ICAT_SAMPLE_FIELDS)} or a field of BLISS's ICAT definitions"
        )
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"ICAT field {name!r} must be a str or None, not {type(value).__name__}")
    if dataset.is_closed:
        raise SampleTrackError(
            f"ICAT dataset {dataset.name!r} is already closed: its fields are frozen; "
            "start a new dataset first (new_dataset)"
        )
    supported = supported_sample_fields(session)
    fields = {
        name: value for name, value in fields.items() if name in supported or name not in ICAT_SAMPLE_FIELDS
    }
    to_set = {name: value for name, value in fields.items() if value is not None}
    if to_set:
        # not dataset[name] = value: BLISS 2.0.3 refuses the SampleChanger/SampleTracking names
        dataset.update_metadata(to_set)
    for name, value in fields.items():
        if value is None:
            dataset.remove_metadata_field(name)
    log.debug(
        "dataset %r: set %s, removed %s", dataset.name, sorted(to_set), sorted(set(fields) - set(to_set))
    )


def new_dataset(session: Session, name: str | None = None) -> str:
    """Close the current dataset and select a new one (``newdataset``); return its name.

    ``name=None``: the next free number (``0002``...); a name already used gets a suffix
    (``name_0002``...). Closing freezes the old dataset's fields (and sends it to ICAT, a no-op
    with the client disabled). The new dataset inherits the collection's fields only
    (``Sample_name`` = collection name unless set otherwise), none of the old dataset's.

    Caveat: BLISS closes a dataset only when some scan was saved in it, and picks the first name
    without a folder: after an empty dataset, the same name (or None after an empty numbered one)
    gives the same dataset back, its fields kept. An invalid name raises BLISS's ValueError
    ("Forbidden characters were used: ...").
    """
    scan_saving = _policy_scan_saving(session)
    before = dataset_name(session)
    try:
        scan_saving.newdataset(name)
    except RuntimeError as exc:  # e.g. "The dataset cannot be closed." (2.0.3)
        raise SampleTrackError(f"could not start a new ICAT dataset after {before!r}: {exc}") from exc
    after = dataset_name(session)
    if after is None:
        raise SampleTrackError(f"BLISS selected no dataset after newdataset({name!r})")
    log.info("ICAT dataset %r -> %r", before, after)
    return after


# --- the scan's own greenlet, before BLISS fixes the scan's dataset --------------------------------

_BEFORE_SCAN: dict[str, Callable[[], None]] = {}
_ORIGINAL_CLONE: Any = None


def before_scan(name: str, hook: Callable[[], None] | None) -> None:
    """Run ``hook()`` in each new scan's greenlet before BLISS fixes the scan's ESRF dataset and
    paths (``ESRFScanSaving.clone``, called by ``Scan.__init__``); ``None`` removes ``name``'s hook.

    A hook must not raise for a reason of its own (the scan would not start): it reports its
    failures itself. Hooks run for every ESRF scan saving of the process, in registration order.
    """
    global _ORIGINAL_CLONE
    from bliss.scanning.scan_saving import ESRFScanSaving

    if hook is None:
        _BEFORE_SCAN.pop(name, None)
        return
    _BEFORE_SCAN[name] = hook
    if _ORIGINAL_CLONE is None:
        _ORIGINAL_CLONE = ESRFScanSaving.clone

        def clone(scan_saving: Any) -> Any:
            for each in list(_BEFORE_SCAN.values()):
                each()
            return _ORIGINAL_CLONE(scan_saving)

        ESRFScanSaving.clone = clone  # type: ignore[method-assign]


# --- switching the policy (tests, demo) -----------------------------------------------------------


def enable_policy(
    session: Session,
    *,
    beamline: str | None = None,
    writer: str | None = HEADLESS_WRITER,
    **roots: str | os.PathLike[str],
) -> None:
    """Switch ``session`` to the ESRF data policy, headless (no ICAT, no Tango writer).

    ``roots``: any of ``ROOT_KEYS`` (e.g. ``inhouse_data_root=tmp_path / "inhouse"``), set with
    ``beamline`` in the in-memory scan saving configuration that BLISS reads (the session's
    ``scan_saving`` node, else the root's, created if missing). Roots not given keep their
    configured value or BLISS's default (``/data/...``, not writable on most machines).
    If the beacon configuration enables ICAT (``icat_servers``), it is disabled in memory.
    ``writer``: set on the ESRF scan saving (default ``"hdf5"``, in-process); None keeps BLISS's.

    Caveat: the overrides live in this process only and stay until changed: use
    :func:`policy_enabled` to undo them. The proposal, collection and dataset are whatever the
    ESRF scan saving last had in Redis (BLISS's default proposal ``<beamline><yymm>`` at first);
    choose them with ``session.scan_saving.newproposal(...)``/``newcollection(...)``.
    """
    _apply_overrides(session, _overrides(beamline, roots))
    session.enable_esrf_data_policy()
    if writer is not None:
        session.scan_saving.writer = writer
    log.info("ESRF data policy enabled in session %r (ICAT disabled, writer %r)", session.name, writer)


def disable_policy(session: Session) -> None:
    """Switch ``session`` back to the basic scan saving (its previous ``base_path`` and writer).

    The ESRF state (proposal, datasets, in Redis) stays for the next :func:`enable_policy`; the
    current dataset is not closed.
    """
    session.disable_esrf_data_policy()
    log.info("ESRF data policy disabled in session %r", session.name)


@contextmanager
def policy_enabled(
    session: Session,
    *,
    beamline: str | None = None,
    writer: str | None = HEADLESS_WRITER,
    **roots: str | os.PathLike[str],
) -> Iterator[Any]:
    """:func:`enable_policy` for the ``with`` block; yields ``session.scan_saving``.

    On exit: the policy is switched off again if it was off, the basic scan saving gets back its
    ``base_path`` and the in-memory configuration its previous values. The ESRF state in Redis
    (proposal, collection, datasets) is left for the next use.
    """
    was_active = policy_active(session)
    basic_base_path = None if was_active else session.scan_saving.base_path
    undo = _apply_overrides(session, _overrides(beamline, roots))
    try:
        enable_policy(session, writer=writer)
        yield session.scan_saving
    finally:
        try:
            if not was_active:
                disable_policy(session)
                if session.scan_saving.base_path != basic_base_path:
                    session.scan_saving.base_path = basic_base_path
        finally:
            undo.restore()


# --- internals ------------------------------------------------------------------------------------


def _policy_scan_saving(session: Session) -> Any:
    if real_session(session) is None:
        raise SampleTrackError("no BLISS session: the ESRF data policy needs one")
    if not policy_active(session):
        raise SampleTrackError(
            f"the ESRF data policy is not enabled in BLISS session {getattr(session, 'name', session)!r}"
        )
    return session.scan_saving


def _current_dataset(session: Session) -> Any:
    scan_saving = _policy_scan_saving(session)
    try:
        dataset = scan_saving.dataset  # created in Redis when missing (both versions)
    except RuntimeError as exc:  # 2.0.3: "proposal/collection/dataset not specified"
        raise SampleTrackError(f"no current ICAT dataset in session {session.name!r}: {exc}") from exc
    if dataset is None:  # 2.4: no proposal chosen yet
        raise SampleTrackError(f"no current ICAT dataset in session {session.name!r}")
    return dataset


def _bliss_knows(dataset: Any, name: str) -> bool:
    return isinstance(name, str) and bool(dataset.validate_field_name(name))


def _overrides(
    beamline: str | None, roots: Mapping[str, str | os.PathLike[str]]
) -> dict[tuple[str, str], Any]:
    unknown = sorted(set(roots) - set(ROOT_KEYS))
    if unknown:
        raise ConfigurationError(
            f"unknown scan saving root(s) {', '.join(unknown)} for enable_policy: "
            f"expected some of {', '.join(ROOT_KEYS)}"
        )
    values: dict[tuple[str, str], Any] = {
        ("scan_saving", key): os.fspath(path) for key, path in roots.items()
    }
    if beamline is not None:
        values[("scan_saving", "beamline")] = beamline
    values[("icat_servers", "disable")] = True
    return values


@dataclass
class _Undo:
    """Previous values of in-memory config nodes, to put back (``_MISSING``: the key was absent)."""

    entries: list[tuple[Any, str, Any]] = field(default_factory=list)
    added_sections: list[tuple[Any, str]] = field(default_factory=list)

    def restore(self) -> None:
        for node, key, previous in reversed(self.entries):
            if previous is _MISSING:
                node.pop(key, None)
            else:
                node[key] = previous
        for parent, key in reversed(self.added_sections):
            parent.pop(key, None)


def _apply_overrides(session: Session, values: Mapping[tuple[str, str], Any]) -> _Undo:
    """Set ``(section, key) -> value`` in the in-memory static config; return how to undo it.

    ``icat_servers.disable`` is only set when ``icat_servers`` exists (no section = disabled).
    """
    from bliss.config.static import get_config

    undo = _Undo()
    config = get_config()
    for (section, key), value in values.items():
        node = _section(config, session.name, section, undo, create=section != "icat_servers")
        if node is None:
            continue
        if node.get(key, _MISSING) == value:
            continue
        previous = node.raw_get(key) if key in node else _MISSING  # raw: references stay references
        if section == "icat_servers":
            log.warning("ICAT is configured (icat_servers); disabled in memory for a headless data policy")
        node[key] = value
        undo.entries.append((node, key, previous))
    return undo


def _section(config: Any, session_name: str, section: str, undo: _Undo, *, create: bool) -> Any:
    """The config node BLISS reads ``section`` from; ``scan_saving``: the session's, else the root's."""
    if section == "scan_saving":
        session_node = config.get_config(session_name)
        if session_node is not None and session_node.get("scan_saving") is not None:
            return session_node["scan_saving"]
    root = config.root
    node = root.get(section)
    if node is None and create:
        root[section] = {}
        undo.added_sections.append((root, section))
        node = root[section]
    return node
