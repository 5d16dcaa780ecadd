"""The unit tier: no BLISS import, no test bed.

gevent monkey-patching as a BLISS session does it (``patch_all(thread=False)``), without importing
BLISS: the HTTP clients under test (requests) talk to gevent WSGI servers in the same process.
In a full run ``tests/system/conftest.py`` has imported BLISS, which patched first: this is then
a no-op.

``no_bliss_in_the_unit_tier`` (session, autouse) fails the run when the unit tier alone (no system
test collected) imported BLISS: a unit test that needs BLISS belongs in ``tests/system``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gevent import monkey

monkey.patch_all(thread=False)

UNIT = Path(__file__).resolve().parent


def bliss_modules() -> list[str]:
    return sorted(name for name in sys.modules if name == "bliss" or name.startswith("bliss."))


@pytest.fixture(scope="session", autouse=True)
def no_bliss_in_the_unit_tier(request: pytest.FixtureRequest) -> Iterator[None]:
    unit_only = all(Path(item.path).resolve().is_relative_to(UNIT) for item in request.session.items)
    yield
    imported = bliss_modules()
    if unit_only and imported:
        pytest.fail(
            f"the unit tier imported BLISS ({', '.join(imported[:5])}...): move the test that needs "
            "it to tests/system",
            pytrace=False,
        )
