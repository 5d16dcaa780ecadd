"""The ICAT+ write-back delivery of tests/system/delivery/test_icatplus_writeback.py: the same
DeliveryManager (event and write-back deliverers of one ICAT+ client) in the test process
(:func:`build_manager`) or as a process that can be killed (``python`` this file)::

    python tests/helpers/writeback_deliverer.py REDIS_URL BEAMLINE ICATPLUS_URL STATUS_EMPTIED

(the API key and the session id in ``$WB_ICATPLUS_API_KEY`` and ``$WB_ICATPLUS_SESSION_ID``).
"""

from __future__ import annotations

import sys
from typing import Any

CLIENT = "icatplus"
KEY_ENV, SESSION_ENV = "WB_ICATPLUS_API_KEY", "WB_ICATPLUS_SESSION_ID"


def config(url: str, status_emptied: str) -> dict[str, Any]:
    return {
        "name": CLIENT,
        "type": "icatplus",
        "url": url,
        "api_key_env": KEY_ENV,
        "timeout": 5,
        "parcel_status": {
            "investigation_id": "123",
            "session_id_env": SESSION_ENV,
            "status_emptied": status_emptied,
        },
        "item_corrections": True,
    }


def build_manager(redis: Any, beamline: str, url: str, status_emptied: str) -> Any:
    """The manager of ``beamline``'s outboxes for one ICAT+ client, with a short backoff."""
    from bliss_sampletrack.delivery.icatplus import IcatPlusClient
    from bliss_sampletrack.delivery.loop import Backoff
    from bliss_sampletrack.delivery.manager import DeliveryManager
    from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

    client = IcatPlusClient.from_config(config(url, status_emptied), "test")
    manager = DeliveryManager(RedisStreamOutbox(redis, beamline), [client])
    for deliverer in manager.deliverers:
        deliverer.backoff = Backoff(initial=0.05, maximum=0.5)
    return manager


def main() -> None:
    import gevent
    import redis

    redis_url, beamline, url, status_emptied = sys.argv[1:5]
    manager = build_manager(redis.Redis.from_url(redis_url), beamline, url, status_emptied)
    manager.start()
    print("delivering", flush=True)
    while True:
        gevent.sleep(1)


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all(thread=False)  # as in BLISS: cooperative sockets for redis-py and requests
    main()
