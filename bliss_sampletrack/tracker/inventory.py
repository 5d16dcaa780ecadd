"""The puck inventory: what a changer's gripper read in its pucks, reconciled with the shipment.

The reads come from :func:`bliss_sampletrack.changers.inventory.read_pucks` (every position of the
loaded pucks). What the shipment declares comes from the tracker's registries: a manifest's
``container_name`` (or ``container_id``) and ``container_position`` put a sample at the changer
position of the puck holding that container (the changer says which container each puck
location holds: ``containers``); an ICAT+ registry answers by changer address
(``sampleChangerLocation``/``sampleContainerPosition``). The first registry that declares an
address wins, as for barcodes.

Findings (:class:`Kind`), each computed from the reads and the declarations alone:

- ``present``: the barcode declared at a position read there (or, for the mounted pin, what the
  changer says is on the goniometer: it is not read);
- ``missing``: declared at a position of a loaded puck, read nowhere;
- ``unexpected``: read, and declared at no position (in no registry, or with no position);
- ``misplaced``: read at one position, declared at another (or in a container not loaded);
- ``swapped``: two pins, each at the other's declared position (one finding for the pair);
- ``duplicated``: the same barcode read at two or more positions (its own positions are not
  also ``present``/``misplaced``: which one is the real pin is for a person to check);
- ``no_read``: a pin gave no code. A no-read is never a sample: the sample declared there is
  neither confirmed nor reported missing (the finding names it).

Pure logic apart from :func:`take_inventory` (reads, then reconciles) and the exports.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from bliss_sampletrack.changers.inventory import PinReading, Progress, PuckReads, read_pucks
from bliss_sampletrack.core import Sample
from bliss_sampletrack.core.address import format_address
from bliss_sampletrack.tracker.registry import Locating, ManifestRegistry, SampleRegistry
from bliss_sampletrack.tracker.views.text import local_time

log = logging.getLogger(__name__)


class Kind(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    UNEXPECTED = "unexpected"
    MISPLACED = "misplaced"
    SWAPPED = "swapped"
    DUPLICATED = "duplicated"
    NO_READ = "no_read"


#: the order of the counts in summaries (problems first, as a person looks for them)
ORDER = (
    Kind.MISSING,
    Kind.UNEXPECTED,
    Kind.MISPLACED,
    Kind.SWAPPED,
    Kind.DUPLICATED,
    Kind.NO_READ,
    Kind.PRESENT,
)
CSV_FIELDS = ("kind", "addresses", "barcode", "sample", "declared_at", "detail")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: its kind, the position(s) concerned, the barcode, the registry's sample (its
    label) and where the shipment declares it."""

    kind: Kind
    addresses: tuple[str, ...]
    barcode: str | None = None
    sample: str | None = None
    declared_at: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "addresses": list(self.addresses),
            "barcode": self.barcode,
            "sample": self.sample,
            "declared_at": self.declared_at,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            Kind(data["kind"]),
            tuple(data["addresses"]),
            data.get("barcode"),
            data.get("sample"),
            data.get("declared_at"),
            data.get("detail", ""),
        )


def _address_key(address: str) -> tuple[int, int]:
    puck, _, position = address.partition(":")
    return (int(puck), int(position)) if puck.isdigit() and position.isdigit() else (0, 0)


@dataclass(frozen=True, slots=True)
class Inventory:
    """One inventory of one changer: its reads and findings. In the shell, its table."""

    tracker: str
    reads: PuckReads
    findings: list[Finding] = field(default_factory=list)
    declared: int = 0  # positions the shipment declares in the loaded pucks
    writeback: list[str] = field(default_factory=list)  # what was queued for ICAT+, or why not

    @property
    def changer(self) -> str:
        return self.reads.changer

    @property
    def taken_at(self) -> datetime:
        return self.reads.finished_at

    def counts(self) -> dict[Kind, int]:
        counts = dict.fromkeys(ORDER, 0)
        for finding in self.findings:
            counts[finding.kind] += 1
        return counts

    def of(self, kind: Kind) -> list[Finding]:
        return [f for f in self.findings if f.kind is kind]

    def summary(self) -> str:
        """One line: when, what was read, the counts per finding."""
        pins = sum(1 for r in self.reads.reads if r.pin or r.on_goniometer)
        counts = ", ".join(f"{n} {kind.value.replace('_', '-')}" for kind, n in self.counts().items() if n)
        return (
            f"{local_time(self.taken_at)}: {len(self.reads.reads)} position(s), {pins} pin(s): "
            f"{counts or 'nothing declared, nothing read'}"
        )

    def text(self) -> str:
        """The table the shell shows."""
        containers = ", ".join(f"{p}: {c or '?'}" for p, c in self.reads.containers.items())
        head = [
            f"inventory of changer {self.changer!r} (tracker {self.tracker!r})",
            f"  taken     : {local_time(self.reads.started_at)} -> {local_time(self.reads.finished_at)}"
            f" (reader {self.reads.reader or 'none'})",
            f"  pucks     : {containers}",
            f"  declared  : {self.declared} position(s) by the registries",
            f"  findings  : {self.summary().split(': ', 1)[1]}",
            "",
        ]
        rows = [("pos", "finding", "barcode", "sample", "declared at", "detail")]
        for f in self.findings:
            rows.append(
                (
                    ", ".join(f.addresses),
                    f.kind.value,
                    f.barcode or "-",
                    f.sample or "-",
                    f.declared_at or "-",
                    f.detail,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "    " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
            for r in rows
        ]
        tail = ["", "  write-back:", *(f"    {note}" for note in self.writeback)] if self.writeback else []
        return "\n".join(head + [line.rstrip() for line in lines] + tail)

    def __info__(self) -> str:  # the BLISS shell shows a returned object's __info__
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker,
            **self.reads.to_dict(),
            "declared": self.declared,
            "counts": {str(k): n for k, n in self.counts().items()},
            "findings": [f.to_dict() for f in self.findings],
            "writeback": list(self.writeback),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Inventory:
        return cls(
            data["tracker"],
            PuckReads.from_dict(dict(data)),
            [Finding.from_dict(f) for f in data.get("findings", [])],
            int(data.get("declared", 0)),
            list(data.get("writeback", [])),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write the inventory (reads and findings) as JSON; returns the path."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    def to_csv(self, path: str | Path) -> Path:
        """Write the findings, one row each (``addresses`` joined by spaces); returns the path."""
        target = Path(path)
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for f in self.findings:
                row = f.to_dict()
                row["addresses"] = " ".join(f.addresses)
                writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_FIELDS})
        return target


# -- what the shipment declares ------------------------------------------------------------------
def declared_positions(
    registries: Iterable[SampleRegistry], containers: Mapping[int, str | None], positions: Iterable[str]
) -> dict[str, Sample]:
    """Address -> the sample the registries declare there, for the loaded pucks (first wins)."""
    wanted = set(positions)
    puck_of = {name: puck for puck, name in containers.items() if name}
    declared: dict[str, Sample] = {}
    for member in registries:
        if isinstance(member, ManifestRegistry):
            for sample in member.samples.values():
                address = _manifest_address(sample, puck_of)
                if address in wanted:
                    declared.setdefault(address, sample)
        elif isinstance(member, Locating):
            for address in sorted(wanted - set(declared), key=_address_key):
                sample = member.resolve_location(address)
                if sample is not None:
                    declared[address] = sample
    return declared


def _manifest_address(sample: Sample, puck_of: Mapping[str, int]) -> str | None:
    puck = puck_of.get(sample.container_name or "") or puck_of.get(sample.container_id or "")
    position = (sample.container_position or "").strip()
    if puck is None or not position.isdigit():
        return None
    return format_address(puck, int(position))


def _declared_text(sample: Sample) -> str | None:
    """Where a registry puts a sample that is in no loaded puck (None: it says nowhere)."""
    container = sample.container_name or sample.container_id
    if container is None:
        return None
    at = f" position {sample.container_position}" if sample.container_position else ""
    return f"{container}{at} (not loaded)"


# -- the reconciliation (pure) -------------------------------------------------------------------
def reconcile(
    reads: PuckReads, declared: Mapping[str, Sample], lookup: Callable[[str], Sample | None]
) -> list[Finding]:
    """The findings of ``reads`` against ``declared`` (address -> sample); ``lookup(barcode)`` is
    the registries' record of a barcode read but not declared in the loaded pucks."""
    seen: dict[str, list[str]] = {}
    mounted: set[str] = set()
    for read in reads.reads:
        code = read.listed if read.on_goniometer else read.code
        if code:
            seen.setdefault(code, []).append(read.address)
            if read.on_goniometer:
                mounted.add(read.address)
    home = {s.barcode: a for a, s in declared.items() if s.barcode}
    findings: list[Finding] = []

    def label(code: str) -> str | None:
        sample = declared.get(home[code]) if code in home else lookup(code)
        return sample.name if sample is not None else None

    swapped: set[str] = set()
    for code, addresses in seen.items():
        if len(addresses) > 1:
            findings.append(
                Finding(
                    Kind.DUPLICATED,
                    tuple(addresses),
                    code,
                    label(code),
                    home.get(code),
                    f"one barcode read at {len(addresses)} positions: check which pin is the sample",
                )
            )
            continue
        (address,) = addresses
        on_gonio = " (on the goniometer: the changer's record, not read)" if address in mounted else ""
        expected = declared.get(address)
        if expected is not None and expected.barcode == code:
            findings.append(Finding(Kind.PRESENT, (address,), code, expected.name, address, on_gonio.strip()))
            continue
        if code in home:
            other = home[code]
            partner = expected.barcode if expected is not None else None
            if partner is not None and seen.get(partner) == [other]:
                if address not in swapped:  # one finding for the pair
                    swapped.update((address, other))
                    pair = tuple(sorted((address, other), key=_address_key))
                    findings.append(
                        Finding(
                            Kind.SWAPPED,
                            pair,
                            code,
                            label(code),
                            other,
                            f"{code} at {address} and {partner} at {other}: each at the other's position",
                        )
                    )
                continue
            findings.append(
                Finding(
                    Kind.MISPLACED, (address,), code, label(code), other, f"declared at {other}{on_gonio}"
                )
            )
            continue
        record = lookup(code)
        elsewhere = _declared_text(record) if record is not None else None
        if elsewhere is not None:
            findings.append(
                Finding(Kind.MISPLACED, (address,), code, record.name, elsewhere, f"declared in {elsewhere}")  # type: ignore[union-attr]
            )
            continue
        why = "in no registry" if record is None else "the registries declare no position for it"
        findings.append(
            Finding(
                Kind.UNEXPECTED,
                (address,),
                code,
                record.name if record is not None else None,
                None,
                why + on_gonio,
            )
        )
    unread: set[str] = set()
    for read in reads.reads:
        if read.no_read:
            unread.add(read.address)
            expected = declared.get(read.address)
            note = f"; declared here: {expected.label} (not confirmed)" if expected is not None else ""
            findings.append(
                Finding(
                    Kind.NO_READ,
                    (read.address,),
                    None,
                    expected.name if expected is not None else None,
                    read.address if expected is not None else None,
                    f"a pin, no code ({read.error or 'no-read'}){note}",
                )
            )
    held = {r.address: r.code for r in reads.reads if r.code}
    for address, sample in declared.items():
        if sample.barcode is None or sample.barcode in seen or address in unread:
            continue  # a name-only record cannot be checked by a reader; a no-read is said above
        there = f"the position holds {held[address]}" if address in held else "the position is empty"
        findings.append(Finding(Kind.MISSING, (address,), sample.barcode, sample.name, address, there))
    findings.sort(key=lambda f: (_address_key(f.addresses[0]), ORDER.index(f.kind)))
    return findings


def inventory_of(
    tracker: str,
    reads: PuckReads,
    registries: Iterable[SampleRegistry],
    lookup: Callable[[str], Sample | None],
) -> Inventory:
    """The reads reconciled with the registries' declarations."""
    members = list(registries)
    declared = declared_positions(members, reads.containers, (r.address for r in reads.reads))
    return Inventory(tracker, reads, reconcile(reads, declared, lookup), len(declared))


def take_inventory(
    tracker: str,
    changer: PinReading,
    registries: Iterable[SampleRegistry],
    lookup: Callable[[str], Sample | None],
    *,
    progress: Progress | None = None,
) -> Inventory:
    """Read every pin of ``changer``'s loaded pucks, then reconcile (see the module)."""
    reads = read_pucks(changer, progress=progress)
    inventory = inventory_of(tracker, reads, registries, lookup)
    log.info("tracker %r: inventory of changer %r: %s", tracker, changer.name, inventory.summary())
    return inventory


def placed_elsewhere(record: Mapping[str, Any] | None, barcode: str | None) -> str | None:
    """For a manual mount of ``barcode``: the contradiction with the last inventory ``record``
    (it read that barcode in a puck), or None. Follows the tracker's ``manual_policy``."""
    if record is None or barcode is None:
        return None
    where = [
        r["address"]
        for r in record.get("reads", [])
        if r.get("code") == barcode and not r.get("on_goniometer")
    ]
    if not where:
        return None
    when = local_time(datetime.fromisoformat(record["finished_at"]))
    return (
        f"the last inventory of changer {record.get('changer')!r} ({when}) read {barcode} in its puck at "
        f"{', '.join(where)}"
    )
