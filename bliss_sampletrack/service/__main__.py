"""``python -m bliss_sampletrack.service``: the same as the ``sampletrack-service`` command."""

import sys

from bliss_sampletrack.service.cli import main

if __name__ == "__main__":  # guarded: spawned validation workers import this module too
    sys.exit(main())
