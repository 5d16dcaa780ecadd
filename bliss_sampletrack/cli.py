"""The ``sampletrack`` command line. Each subcommand lives in its own module's ``main(argv)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from bliss_sampletrack import __version__

#: subcommand -> ("module" or "module:function" taking argv and returning the exit code, help)
SUBCOMMANDS = {
    "demo": (
        "bliss_sampletrack.demo.run",
        "run the simulated beamline: beacon, Redis, a real BLISS session and a scan",
    ),
    "deliver": (
        "bliss_sampletrack.commands.deliver:deliver_main",
        "deliver the tracker's outbox to its tracking services (daemon, or --drain)",
    ),
    "status": (
        "bliss_sampletrack.commands.deliver:status_main",
        "the tracker's state, recent events, pending and dead-lettered deliveries",
    ),
    "annotate": (
        "bliss_sampletrack.tagging.annotate_cli",
        "write or verify the NXsample group of HDF5 scans from a tracker's history",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sampletrack", description="Sample tracking for BLISS beamlines.")
    parser.add_argument("--version", action="version", version=f"bliss-sampletrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command in SUBCOMMANDS:
        module_name, _, function = SUBCOMMANDS[args.command][0].partition(":")
        return int(getattr(importlib.import_module(module_name), function or "main")(rest))
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    parser.print_help()
    return 2
