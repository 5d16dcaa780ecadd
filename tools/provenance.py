#!/usr/bin/env python
"""Provenance soak: does every saved scan carry the sample physically on the goniometer?

    .venv/bin/python tools/provenance.py --seed N --scans K [--policy-fraction 0.33] [--json FILE]
                                         [--workdir DIR] [--keep]

A real beacon and BLISS session (the demo beamline), a seeded random schedule of saved scans
interleaved with changer moves, kills, manual and hand operations, reader no-reads and changer
faults; each scan's tag (Redis and HDF5) is then classified against the simulated hardware's own
timeline. The logic, the classes and the caveats: :mod:`bliss_sampletrack.testbed.provenance`.

Exit status: 0 when no scan is WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, SILENT, MISMATCH or RAISED;
1 otherwise; 2 when the soak could not run.
"""

from __future__ import annotations

import sys

from bliss_sampletrack.testbed.provenance import main

if __name__ == "__main__":
    sys.exit(main())
