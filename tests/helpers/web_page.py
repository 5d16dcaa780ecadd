"""The web page in headless Chromium, for test_service_web.py and test_demo.py: the page harness
process (``service_fixtures.py ui-harness``), Chromium's command line, and the parts of the DOM
it dumps that the tests look at."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from service_fixtures import HELPERS, Service, start_process

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def harness(db_url: str, token: str, folder: Path) -> Service:
    script = HELPERS / "service_fixtures.py"
    cmd = [sys.executable, str(script), "ui-harness", "--db", db_url]
    return start_process(cmd, folder / "harness.log", {"SAMPLETRACK_UI_TOKEN": token})


def run_chromium(chromium: str, url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = folder / f"profile-{len(list(folder.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


class Dom(HTMLParser):
    """The parts of the dumped DOM the test looks at: table rows, timeline bars, status texts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.bars: list[tuple[str, str]] = []
        self.texts: dict[str, str] = {}
        self.body_state = ""
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._bar: tuple[str, list[str]] | None = None
        self._text_id: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.body_state = attributes.get("data-state") or ""
        if tag == "table":
            self._table = attributes.get("id")
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "div" and "bar" in (attributes.get("class") or "").split():
            self._bar = (attributes.get("class") or "", [])
        elif tag == "p" and attributes.get("id"):
            self._text_id = attributes["id"]
            self.texts[self._text_id] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.rows.setdefault(self._table or "", []).append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._bar is not None:
            self.bars.append((self._bar[0], "".join(self._bar[1])))
            self._bar = None
        elif tag == "p":
            self._text_id = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._bar is not None:
            self._bar[1].append(data)
        if self._text_id is not None:
            self.texts[self._text_id] += data
