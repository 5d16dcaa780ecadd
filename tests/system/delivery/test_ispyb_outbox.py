"""The ISPyB delivery client through the real outbox (the test bed's Redis) and Deliverer: in order,
a 503 held back and retried, refusals dead-lettered (the client alone: tests/unit/delivery/
test_ispyb_client.py)."""

from __future__ import annotations

from typing import Any

import pytest
from ispyb_fixtures import IspybRecorder, make_client, mounted, unmounted
from outboxes import fill

from bliss_sampletrack.core import Sample, Status

pytest_plugins = ["ispyb_fixtures"]
pytestmark = pytest.mark.usefixtures("token_env")


@pytest.mark.bliss
def test_delivered_through_the_outbox_in_order_with_dead_letters(
    ispyb: tuple[str, IspybRecorder], outbox: Any
) -> None:
    from bliss_sampletrack.delivery.loop import Backoff, Deliverer

    url, recorder = ispyb
    client = make_client(url)
    load = mounted()
    unload = unmounted(status=Status.ERROR, message="pin stuck", mount_event_id=load.event_id)
    elsewhere = mounted(proposal="mx9999")
    refused = mounted(Sample(barcode="LYS-0043"))
    fill(outbox, [load, unload, elsewhere, refused])
    # the unload's create first meets a 503; the last mount's create is refused by the server
    recorder.answers = [
        None,
        None,
        (503, {}, "maintenance"),
        None,
        None,
        (422, {}, {"detail": "no such sample"}),
    ]
    deliverer = Deliverer(outbox, client, backoff=Backoff(initial=0.01, maximum=0.05))

    finished = [deliverer.step() for _ in range(6)]

    assert finished == [1, 0, 1, 1, 1, 0]  # the 503 held the unload (and all after it) back once
    assert outbox.pending(client.name) == 0
    assert [(r.method, r.body.get("actionType") or r.body.get("status")) for r in recorder.requests] == [
        ("POST", "LOAD"),
        ("PATCH", "SUCCESS"),
        ("POST", "UNLOAD"),  # 503
        ("POST", "UNLOAD"),
        ("PATCH", "ERROR"),
        ("POST", "LOAD"),  # 422
    ]
    assert [(row["actionType"], row["status"], row["message"]) for row in recorder.rows.values()] == [
        ("LOAD", "SUCCESS", ""),
        ("UNLOAD", "ERROR", "pin stuck"),
    ]
    letters = outbox.dead_letters(client.name)
    assert [letter.event.event_id for letter in letters] == [elsewhere.event_id, refused.event_id]
    assert "event of proposal 'mx9999'" in letters[0].answer
    assert letters[1].answer == 'robot action create refused: 422 {"detail": "no such sample"}'
    assert outbox.last_error(client.name) is None
