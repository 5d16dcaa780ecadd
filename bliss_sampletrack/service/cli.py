"""``sampletrack-service``: the tracking service's command line.

The entry point exists so that its name is stable; the service itself (``serve``, ``token``)
is not built yet, and the command says so instead of pretending.
"""

from __future__ import annotations

import argparse
import sys

from bliss_sampletrack import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sampletrack-service",
        description="Tracking service for sample mount/unmount events (not built yet).",
    )
    parser.add_argument("--version", action="version", version=f"bliss-sampletrack {__version__}")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(
        "sampletrack-service: the tracking service is not part of this release yet; "
        "no subcommand is available",
        file=sys.stderr,
    )
    return 2
