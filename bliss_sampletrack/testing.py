"""Test helpers that are part of the package: the tracker's engine without a BLISS session.

For the plugin's own tests and for beamlines testing their macros::

    from bliss_sampletrack import testing

    tracker = testing.engine(samples=[Sample(barcode="LYS-0001", name="lyso")])   # on fakeredis
    bench = testing.changer_bench(contents={"1:01": "LYS-0001"})                   # + changer + link
    bench.changer.mount("1:01")
    assert bench.tracker.sample.barcode == "LYS-0001"
    bench.close()

Everything is real but the Redis server: the engine (:class:`~bliss_sampletrack.tracker.engine.
Tracker`) with its state machine, persistence (one transaction per change), lease and checks;
the simulated changer and the link that records it. ``redis=`` takes a real client instead of
fakeredis (``pip install fakeredis``, in the ``test`` extra).

Small helpers the plugin's tests share (each was written in several test files):
:func:`summary` (events as ``(type, barcode, status)``), :func:`as_text` (an HDF5 value as text),
:func:`wait_for` (a condition, cooperatively); and, for tests in a real BLISS session,
:func:`clear_tracker_keys` and :func:`last_scan_info` (they import BLISS / blissdata when called).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bliss_sampletrack.core import Event, Sample
from bliss_sampletrack.tracker.engine import Tracker
from bliss_sampletrack.tracker.registry import ChainRegistry


class SampleTable:
    """A sample registry from records in memory (by barcode)."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self.samples = {s.barcode: s for s in samples if s.barcode is not None}

    def resolve(self, barcode: str) -> Sample | None:
        return self.samples.get(barcode)

    def describe(self) -> str:
        return f"{len(self.samples)} sample(s) in memory"


def engine(
    name: str = "tracker",
    beamline: str = "test",
    *,
    redis: Any = None,
    samples: Iterable[Sample] = (),
    **options: Any,
) -> Tracker:
    """A tracker engine on ``redis`` (default: a new fakeredis server), with ``samples`` as its
    registry; ``options`` are the engine's keyword arguments (``manual_policy``...)."""
    if redis is None:
        import fakeredis

        redis = fakeredis.FakeRedis()
    return Tracker(name, beamline, redis, registry=ChainRegistry([SampleTable(samples)]), **options)


def events(tracker: Tracker, count: int = 1000) -> list[Event]:
    """The tracker's last ``count`` events, oldest first (its history in Redis)."""
    return list(reversed(tracker.store.history(count)))


@dataclass
class ChangerBench:
    """An engine, a simulated changer and the link recording it on the engine."""

    tracker: Tracker
    changer: Any  # SimulatedChanger
    link: Any  # ChangerLink

    def close(self) -> None:
        self.link.close()
        self.tracker.close()


def changer_bench(
    contents: Mapping[str, Any] | None = None,
    *,
    load_time: float = 0.0,
    samples: Iterable[Sample] = (),
    check_presence: bool = True,
    **options: Any,
) -> ChangerBench:
    """:func:`engine` with a simulated changer ``sc`` (``contents``: address -> barcode, as its
    YAML) and the link between them. The changer needs BLISS importable (not a session)."""
    from bliss_sampletrack.changers.link import link_changer
    from bliss_sampletrack.changers.simulated import SimulatedChanger

    changer = SimulatedChanger(
        "sc",
        {
            "contents": dict(contents or {"1:01": "LYS-0001", "1:02": "LYS-0002", "2:01": "THA-0003"}),
            "load_time": load_time,
            "unload_time": load_time,
        },
    )
    tracker = engine(samples=samples, **options)
    link = link_changer(tracker, changer, name="sc_link", check_presence=check_presence)
    return ChangerBench(tracker, changer, link)


def summary(events: Iterable[Event]) -> list[tuple[str, str | None, str]]:
    """``(type, barcode, status)`` of each event, in order: what most assertions compare."""
    return [(str(e.type), e.sample.barcode, str(e.status)) for e in events]


def as_text(value: Any) -> Any:
    """``value`` decoded if it is bytes (as h5py reads strings), else as it is."""
    return value.decode() if isinstance(value, bytes) else value


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms (gevent-cooperatively) until it is true; after ``timeout``
    seconds raise AssertionError naming ``what`` was waited for."""
    import gevent

    with gevent.Timeout(timeout, AssertionError(f"timed out after {timeout:g} s waiting for {what}")):
        while not condition():
            gevent.sleep(0.05)


def clear_tracker_keys(name: str = "tracker") -> None:
    """Delete tracker ``name``'s keys and every outbox from beacon's Redis (a BLISS session's)."""
    from bliss.config.conductor.client import get_redis_proxy

    redis = get_redis_proxy()
    for pattern in (f"sampletrack:{name}:*", "sampletrack:outbox:*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


def last_scan_info(redis_data_url: str) -> dict[str, Any]:
    """The last scan's ``scan_info`` from beacon's data Redis, through a fresh blissdata client (as
    a process outside the session reads it)."""
    from blissdata.redis_engine.store import DataStore

    store = DataStore(redis_data_url)
    _, key = store.get_last_scan()
    return dict(store.load_scan(key).info)


def icat_fields_as_set(session: Any, expected: dict[str, str]) -> dict[str, str]:
    """Of ``expected`` ICAT sample fields, those this stack's ICAT definitions accept: what a
    dataset (and a scan's ``dataset_metadata_snapshot``) then holds. BLISS 2.0.3's pyicat-plus
    accepts ``Sample_name`` only; 2.4 all (``data_policy.supported_sample_fields``)."""
    from bliss_sampletrack.tagging import data_policy

    names = data_policy.supported_sample_fields(session)
    return {key: value for key, value in expected.items() if key in names}


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not reaped yet, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendants(root: int, *, living_only: bool = True) -> dict[int, str]:
    """pid -> command line of every descendant of ``root`` (Linux ``/proc``); with
    ``living_only``, zombies are walked through but not listed."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, the last ")" ends it
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid in [p for p, pp in parents.items() if pp == parent]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if not living_only or alive(pid):
                found[pid] = cmdline.decode(errors="replace")
            todo.append(pid)
    return found
