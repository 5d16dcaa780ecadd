"""The service's web page: a beamline's timeline of mounted samples and a sample's history.

Plain HTML, CSS and vanilla JavaScript (no build step), served from this package at
``{base}/ui/``. The page itself needs no token and holds no data; its script asks for a read
token, keeps it in ``sessionStorage`` (this browser tab only, gone when the tab closes) and sends
it as an ``Authorization: Bearer`` header. The token never goes into a URL. View state that is not
secret (beamline, time range, barcode) is kept in the query string so that a view can be shared.

Caveats: a strict Content-Security-Policy forbids inline scripts, and the script builds the page
with ``textContent`` only (sample names and messages are data, never markup).
"""

from __future__ import annotations

import html
from importlib import resources

from flask import Flask, Response, abort, redirect

ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def index_html(base_path: str) -> str:
    return _read("index.html").replace("{{API_BASE}}", html.escape(base_path, quote=True))


def register(app: Flask, base_path: str) -> None:
    """Add ``{base}/ui/`` (the page) and its assets to ``app``."""
    page = index_html(base_path)
    assets = {name: _read(name) for name in ASSETS}

    def index() -> Response:
        return Response(page, mimetype="text/html", headers=SECURITY_HEADERS)

    def asset(name: str) -> Response:
        if name not in assets:
            abort(404)
        return Response(assets[name], mimetype=ASSETS[name], headers=SECURITY_HEADERS)

    app.add_url_rule(f"{base_path}/ui", "ui_redirect", lambda: redirect(f"{base_path}/ui/"), methods=["GET"])
    app.add_url_rule(f"{base_path}/ui/", "ui_index", index, methods=["GET"])
    app.add_url_rule(f"{base_path}/ui/<name>", "ui_asset", asset, methods=["GET"])
