"""``sampletrack annotate``: tag (or verify) the scans of an HDF5 file from the tracker's history.

::

    sampletrack annotate FILE [--scan N ...] [--verify] [--force]
                         (--events EVENTS.json [--tracker NAME] | --beacon HOST:PORT --tracker NAME)

The history comes from a JSON file (a list of contract events, or the tracking service's
``GET /events`` answer) or from the tracker's Redis history on the beacon (this needs BLISS: the
beacon's Redis is reached through ``bliss.config.conductor.client``).

Exit codes: 0 every scan written, kept or verified; 1 some scan mismatched or was skipped;
2 usage errors and errors that stop the run (no such file or scan, file locked, bad history).

Caveats: run it between scans. While a scan runs, the BLISS writer holds the file and it is refused
as locked (see :mod:`bliss_sampletrack.tagging.annotate`). With ``--beacon`` in a process that is
already connected to a beacon (a BLISS session), that connection is used, whatever ``--beacon`` says.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path

from redis.exceptions import RedisError

from bliss_sampletrack.core import Event
from bliss_sampletrack.errors import SampleTrackError
from bliss_sampletrack.tagging.annotate import (
    Action,
    AnnotateError,
    ScanAnnotation,
    annotate_file,
    load_events_json,
    load_events_redis,
)

log = logging.getLogger(__name__)

PROG = "sampletrack annotate"
DEFAULT_TRACKER = "tracker"
_BEACON = re.compile(r"^[^:\s]+:\d+$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Add the NXsample group <n>.1/sample to scans written without the sample tracker, from the "
            "tracker's history; or check existing groups against it (--verify)."
        ),
        epilog=(
            "Exit codes: 0 all scans written/kept/verified, 1 a mismatch or a skipped scan, 2 usage "
            "error or a file/history that cannot be used. Run it between scans: during a scan the BLISS "
            "writer holds the file locked."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the BLISS HDF5 file")
    parser.add_argument(
        "--scan",
        type=int,
        action="append",
        dest="scans",
        metavar="N",
        help="scan number (entry N.1); repeat for several; default: every scan of the file",
    )
    parser.add_argument("--verify", action="store_true", help="only compare; never write")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a sample group that disagrees with the history (the old one is kept, renamed)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--events",
        type=Path,
        metavar="EVENTS.json",
        help='the history as JSON: a list of contract events, or GET /events\'s {"events": [...]}',
    )
    source.add_argument("--beacon", metavar="HOST:PORT", help="read the tracker's history in beacon's Redis")
    parser.add_argument(
        "--tracker",
        metavar="NAME",
        help=f"the tracker's name (required with --beacon; with --events, default {DEFAULT_TRACKER!r})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        _check(parser, args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    tracker = args.tracker or DEFAULT_TRACKER
    try:
        events = _events(args, tracker)
        results = annotate_file(args.file, events, tracker, args.scans, verify=args.verify, force=args.force)
    except SampleTrackError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(result.line())
    print(_summary(args.file, results, args.verify))
    return 0 if all(result.ok for result in results) else 1


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.verify and args.force:
        parser.error("--force writes; --verify never does: use one of them")
    if args.beacon is not None:
        if not args.tracker:
            parser.error("--beacon needs --tracker NAME (the tracker whose history to read)")
        if not _BEACON.match(args.beacon):
            parser.error(f"--beacon {args.beacon!r}: expected HOST:PORT, e.g. localhost:25000")


def _events(args: argparse.Namespace, tracker: str) -> list[Event]:
    if args.events is not None:
        events = load_events_json(args.events)
        where = str(args.events)
    else:
        events = _events_from_beacon(args.beacon, tracker)
        where = f"the history of tracker {tracker!r} on beacon {args.beacon}"
    if not events:
        raise AnnotateError(f"no events in {where}: there is nothing to annotate from")
    return events


def _events_from_beacon(beacon: str, tracker: str) -> list[Event]:
    os.environ["BEACON_HOST"] = beacon
    try:
        import bliss  # noqa: F401  (first: gevent monkey-patching, before the conductor client)
        from bliss.config.conductor.client import get_redis_proxy
    except ImportError as exc:
        raise AnnotateError(f"--beacon needs BLISS installed ({exc}); or use --events") from exc
    try:
        redis = get_redis_proxy()
        return load_events_redis(redis, tracker)
    except (OSError, RuntimeError, RedisError) as exc:  # BLISS: RuntimeError "does not reply"
        raise AnnotateError(f"cannot read the history from beacon {beacon}: {exc}") from exc


def _summary(path: Path, results: list[ScanAnnotation], verify: bool) -> str:
    counts = Counter(result.action for result in results)
    parts = [f"{counts[action]} {action}" for action in Action if counts[action]]
    mode = "verified" if verify else "annotated"
    return f"{path}: {len(results)} scan(s) {mode}: {', '.join(parts) or 'none'}"


if __name__ == "__main__":
    sys.exit(main())
