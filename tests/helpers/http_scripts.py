"""Scripted HTTP servers for the tests of the ICAT+ and ISPyB clients and the ICAT+ registry.

A :class:`ScriptedServer` is a WSGI app served by a gevent WSGI server on loopback (the test
process is gevent-patched as by BLISS: a thread-based server would not work). It records every
request (method, path, query, headers, JSON body), can hang (all paths, or those ending with
``hang_on``), and answers from its ``answers`` script first, then as the API it stands for
(:meth:`ScriptedServer.default`, written by each test module). The contract service's recorder is
``tests/recorder.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import gevent

#: (status, extra headers, body): a dict/list is sent as JSON, text as is, a function of the
#: request gives either
Answer = tuple[int, dict[str, str], Any]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def line(self) -> tuple[str, str, dict[str, str]]:
        return self.method, self.path, self.query


def recorded(environ: dict[str, Any]) -> Recorded:
    """The request of a WSGI ``environ`` (its body read as JSON, when there is one)."""
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return Recorded(
        environ["REQUEST_METHOD"],
        environ["PATH_INFO"],
        dict(parse_qsl(environ.get("QUERY_STRING", ""))),
        headers,
        json.loads(raw) if raw else None,
    )


class ScriptedServer:
    """Records every request; answers from ``answers`` (None in it: as :meth:`default`), then as
    :meth:`default` does."""

    #: the Content-Type of a text answer, and the reason phrase of every status line
    text_type = "text/html"
    reason = "Scripted"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.answers: list[Answer | None] = []
        self.hang = 0.0
        self.hang_on = ""  # hang only on paths that end so ("": all)

    def default(self, request: Recorded) -> Answer:
        raise NotImplementedError

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        request = recorded(environ)
        self.requests.append(request)
        if self.hang and request.path.endswith(self.hang_on):
            gevent.sleep(self.hang)
        scripted = self.answers.pop(0) if self.answers else None
        status, extra, answer = scripted if scripted is not None else self.default(request)
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, str):
            data, kind = answer.encode(), self.text_type
        else:
            data, kind = json.dumps(answer).encode(), "application/json"
        start_response(f"{status} {self.reason}", [("Content-Type", kind), *extra.items()])
        return [data]


@contextmanager
def serving(app: Any, **tls: str) -> Iterator[str]:
    """Serve ``app`` on a free loopback port (HTTPS with ``certfile``/``keyfile``); yields its URL."""
    from gevent.pywsgi import WSGIServer

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None, **tls)
    server.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.stop(timeout=1)
