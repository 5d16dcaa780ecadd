"""The ``sampletrack`` command line. Subcommands grow with the plugin (status, deliver, ...)."""

from __future__ import annotations

import argparse
import sys

from bliss_sampletrack import __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="sampletrack",
        description="Sample tracking for BLISS beamlines.",
    )
    parser.add_argument("--version", action="version", version=f"bliss-sampletrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "demo",
        help="run the simulated beamline: beacon, Redis, a real BLISS session and a scan",
        add_help=False,
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from bliss_sampletrack.demo.run import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    parser.print_help()
    return 2
