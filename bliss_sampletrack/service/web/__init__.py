"""The service's web page: a beamline's timeline of mounted samples, a sample search (barcode or
name) and a sample's page (its whole history across beamlines), refreshed live.

Plain HTML, CSS and JavaScript modules (no build step, nothing loaded from elsewhere: it works
offline), served from this package at ``{base}/ui/``: ``index.html``, ``style.css``, ``app.js``
(views, rendering, token, refresh), ``model.js`` (events to visits, durations, time zones, the
axis; no DOM) and ``api.js`` (the contract's read endpoints). The page uses the contract's
endpoints only; the search by name scans ``GET /events`` newest first (the contract searches by
barcode only). The page itself needs no token and holds no data; its script asks for a read
token, keeps it in ``sessionStorage`` (this browser tab only, gone when the tab closes) and sends
it as an ``Authorization: Bearer`` header. The token never goes into a URL. View state that is not
secret (beamline, time range, sample, search, time zone) is kept in the query string so that a
view can be shared.

Caveats: a strict Content-Security-Policy forbids inline scripts, and the script builds the page
with ``textContent`` only (sample names and messages are data, never markup).
"""

from __future__ import annotations

import html
from importlib import resources

from flask import Flask, Response, abort, redirect

ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "model.js": "text/javascript",
    "style.css": "text/css",
}
#: the tab's icon (bars of a timeline), kept here rather than as a file: setup.cfg packages only
#: the *.html, *.js and *.css of this folder. Without one the browser asks for /favicon.ico (a 404).
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
    'fill="#eef1f4"/><rect x="3" y="9" width="12" height="6" rx="2" fill="#2f6fd6"/><rect x="17" y="9" '
    'width="12" height="6" rx="2" fill="#1f883d"/><rect x="3" y="19" width="8" height="6" rx="2" '
    'fill="#e3b341"/><rect x="13" y="19" width="6" height="6" rx="2" fill="#b42318"/></svg>'
)
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
    assets = {name: (_read(name), mimetype) for name, mimetype in ASSETS.items()}
    assets["icon.svg"] = (ICON_SVG, "image/svg+xml")

    def index() -> Response:
        return Response(page, mimetype="text/html", headers=SECURITY_HEADERS)

    def asset(name: str) -> Response:
        if name not in assets:
            abort(404)
        text, mimetype = assets[name]
        return Response(text, mimetype=mimetype, headers=SECURITY_HEADERS)

    app.add_url_rule(f"{base_path}/ui", "ui_redirect", lambda: redirect(f"{base_path}/ui/"), methods=["GET"])
    app.add_url_rule(f"{base_path}/ui/", "ui_index", index, methods=["GET"])
    app.add_url_rule(f"{base_path}/ui/<name>", "ui_asset", asset, methods=["GET"])
