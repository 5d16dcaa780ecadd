"""What every test shares; no BLISS here (the unit tier never imports it).

The layout (README, "Tests"):

- ``tests/unit/<area>/``: no BLISS import, no beacon or BLISS session, fast (pure logic, fakeredis,
  loopback HTTP servers); ``tests/unit/conftest.py`` gevent-patches as a BLISS session does and
  fails the run if BLISS was imported. ``bash tools/test.sh --unit`` runs only these.
- ``tests/system/<area>/``: the test bed (``tests/system/conftest.py``: BLISS imported first,
  beacon, Redis, a BLISS session...), service processes, PostgreSQL, Chromium, the soaks.
- ``tests/helpers/``: helper modules, imported by name (``from recorder import Recorder``,
  ``pytest_plugins = ["service_fixtures"]``): pyproject's ``pythonpath`` puts the folder on
  ``sys.path``.

``<area>`` is the package folder under test (core, readers, changers, tracker, tagging, delivery,
service, commands, demo, testbed); a test of a top-level module (``cli.py``, ``config_node.py``)
or of the whole chain sits in the tier's own folder.

Order in a full run: ``tests/system`` is collected before ``tests/unit`` (alphabetical), so BLISS
is imported (and patches gevent its own way) before anything else, as in a BLISS session.

- ``gevent_ssl_for_urllib3`` (autouse): urllib3 uses gevent's ``SSLContext`` as in production, so
  HTTPS requests work in the tests on the BLISS 2.4 stack (see the fixture).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def gevent_ssl_for_urllib3(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the BLISS 2.4 test environment pyicat-plus's pytest plugin imports requests (urllib3)
    before BLISS (or the unit tier's conftest) monkey-patches ssl, so urllib3 keeps the unpatched
    ``SSLContext`` and any HTTPS request dies with a RecursionError. In a BLISS session or
    ``sampletrack deliver`` BLISS is imported first and urllib3 gets gevent's class: give it that
    here too.

    Autouse for every test because it is harmless: it only puts back what urllib3 has in
    production, and it is a no-op where urllib3 already has gevent's class (the BLISS 2.0.3 stack,
    measured: ``urllib3.util.ssl_.SSLContext is ssl.SSLContext``); undone after each test."""
    import ssl

    import urllib3.util.ssl_

    if urllib3.util.ssl_.SSLContext is not ssl.SSLContext:
        monkeypatch.setattr(urllib3.util.ssl_, "SSLContext", ssl.SSLContext)
