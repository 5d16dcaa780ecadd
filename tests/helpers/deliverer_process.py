"""A delivering process for the delivery tests: one Deliverer (the same loop the BLISS session and
``sampletrack deliver`` run) on an outbox, to a REST service, until killed.

    python tests/helpers/deliverer_process.py REDIS_URL BEAMLINE SERVICE_URL   (token in $ST_TOKEN)
"""

from __future__ import annotations

import os
import sys

from gevent import monkey

monkey.patch_all(thread=False)  # as in BLISS: cooperative sockets for redis-py and requests

import redis  # noqa: E402

from bliss_sampletrack.delivery.clients import RestClient  # noqa: E402
from bliss_sampletrack.delivery.loop import Backoff, Deliverer  # noqa: E402
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox  # noqa: E402


def main() -> None:
    redis_url, beamline, service_url = sys.argv[1:4]
    outbox = RedisStreamOutbox(redis.Redis.from_url(redis_url), beamline)
    client = RestClient(
        "service", service_url, os.environ["ST_TOKEN"], max_batch=int(os.environ.get("ST_BATCH", "50"))
    )
    deliverer = Deliverer(outbox, client, backoff=Backoff(initial=0.05, maximum=0.5))
    print("delivering", flush=True)
    deliverer.run()


if __name__ == "__main__":
    main()
