"""A contract-shaped HTTP service for delivery tests: a gevent WSGI server on loopback that
records every request and answers from a script (the test process is gevent-patched as by BLISS, so
a thread-based server would not work here)."""

from __future__ import annotations

import json
from typing import Any


class Recorder:
    """A contract-shaped HTTP service on loopback (gevent WSGI server): records requests and
    answers from a script of (status, headers, body or body function)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []

    @staticmethod
    def _accept(path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        """The default answer: everything stored (201), as the contract's service answers."""
        if path.endswith("/events/batch"):
            results = [{"event_id": e["event_id"], "status": 201, "error": None} for e in body["events"]]
            return 200, {}, {"results": results}
        return 201, {}, {"event": body}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests.append((environ["PATH_INFO"], headers, body))
        status, extra, answer = (
            self.answers.pop(0) if self.answers else self._accept(environ["PATH_INFO"], body)
        )
        if callable(answer):
            answer = answer(body)
        data = json.dumps(answer or {"event": body}).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), *extra.items()])
        return [data]
