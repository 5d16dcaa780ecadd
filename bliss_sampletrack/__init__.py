"""bliss-sampletrack: know which sample is mounted, tag every BLISS scan with it, tell the tracking service.

Layout (one folder per concern):
- ``core``: the domain values (``Sample``, ``Event``), barcode rules and the contract's schema checks;
  no BLISS import, so the tracking service and pure-logic tests use it too.
- ``testbed``: a real beacon server, Redis and BLISS session for tests and the demo; never imported
  by the plugin's runtime path on a beamline.
- ``cli``: the ``sampletrack`` command line.
"""

__version__ = "0.1.0"
