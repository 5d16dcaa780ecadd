"""A stand-in ISPyB (its core REST API's robot actions) and the ISPyB client's test data, for the
ISPyB delivery tests (tests/unit/delivery/test_ispyb_client.py, tests/system/delivery/
test_ispyb_outbox.py): ``pytest_plugins = ["ispyb_fixtures"]`` and
``pytestmark = pytest.mark.usefixtures("token_env")``.

- ``ispyb``: the stand-in on loopback (``http_scripts.serving``); yields ``(base_url, recorder)``.
- ``token_env``: ``$ISPYB_TOKEN`` set, the CA bundle variables unset (not autouse: a plugin's
  autouse fixture would apply to every test of the run).

PYTEST_DONT_REWRITE: the modules import helpers from here before pytest registers it as a plugin,
and it holds no test assertions to rewrite.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from http_scripts import Answer, Recorded, ScriptedServer, serving

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.ispyb import IspybClient

TOKEN = "1spyb-t0ken-5ecret-value"
WHERE = "'tracker' in sampletrack.yml, key 'delivery'"
T0 = datetime(2026, 11, 24, 12, 30, 5, tzinfo=UTC)

FULL_SAMPLE = Sample(
    barcode="LYS-0042",
    name="lysozyme-3",
    sample_id="5289780",
    container_name="puck-7",
    container_position="7",
    changer_name="flex",
    changer_position="3:05",
)


class IspybRecorder(ScriptedServer):
    """Answers like the ISPyB core REST API (robot actions only), or from ``answers`` first."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, Any]] = {}  # what ISPyB stored, by robotActionId

    def default(self, request: Recorded) -> Answer:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {}, {"detail": "Not authenticated"}
        parts = request.path.strip("/").split("/")
        if (
            request.method == "POST"
            and len(parts) == 6
            and parts[1::2] == ["proposals", "sessions", "robot-actions"]
        ):
            action_id = 1000 + len(self.rows) + 1
            self.rows[action_id] = {
                "robotActionId": action_id,
                "visit": f"{parts[2]}-{parts[4]}",
                **request.body,
            }
            return 201, {}, self.rows[action_id]
        if request.method == "PATCH" and len(parts) == 3 and parts[1] == "robot-actions":
            row = self.rows.get(int(parts[2])) if parts[2].isdigit() else None
            if row is None:
                return 404, {}, {"detail": "Robot action not found"}
            row.update(request.body)
            return 200, {}, row
        return 404, {}, {"detail": "Not Found"}


@pytest.fixture
def ispyb() -> Iterator[tuple[str, IspybRecorder]]:
    recorder = IspybRecorder()
    with serving(recorder) as url:
        yield f"{url}/api", recorder


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISPYB_TOKEN", TOKEN)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)  # the environment's CA bundle must not decide


def entry(base_url: str, /, **extra: Any) -> dict[str, Any]:
    return {
        "name": "ispyb",
        "type": "ispyb",
        "url": base_url,
        "visit": "mx2532-1",
        "timeout": 5,
        "timezone": "UTC",
        **extra,
    }


def make_client(url: str, **extra: Any) -> IspybClient:
    return IspybClient.from_config(entry(url, **extra), WHERE)


def mounted(sample: Sample = FULL_SAMPLE, **kwargs: Any) -> Event:
    values = {"beamline": "id23-1", "session": "mx", "source": Source.SAMPLE_CHANGER, "occurred_at": T0}
    return Event.mounted(sample, **{"proposal": "mx2532", **values, **kwargs})


def unmounted(sample: Sample = FULL_SAMPLE, **kwargs: Any) -> Event:
    values = {"beamline": "id23-1", "session": "mx", "source": Source.SAMPLE_CHANGER, "occurred_at": T0}
    return Event.unmounted(sample, **{**values, **kwargs})
