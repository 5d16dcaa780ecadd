"""The web page in headless Chromium, for test_service_web.py and test_demo.py: the page harness
process (``service_fixtures.py ui-harness``), Chromium's command line, the parts of the DOM it
dumps that the tests look at (:class:`Dom`), and :class:`Browser`, Chromium driven over the
DevTools protocol for what a DOM dump cannot show (typing, waiting for a live refresh, computed
styles, full-page screenshots).

Run as a script, it takes the screenshots of the docs (``docs/web-page.md``)::

    python tests/helpers/web_page.py shoot --db sqlite:///DIR/service.db --token-env DIR/tokens.env \
        --view '/api/v1/ui/?beamline=id00' --out docs/timeline.png [--tz Europe/Paris]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


def harness_url(service: Service, view: str) -> str:
    """The harness URL that stores the token in the page's sessionStorage, then opens ``view``."""
    return service.base_url.rsplit("/api/v1", 1)[0] + "/harness?to=" + quote(view, safe="")


def run_chromium(
    chromium: str, url: str, folder: Path, *args: str, tz: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Chromium once (``--dump-dom`` or ``--screenshot``); ``tz``: the browser's time zone."""
    profile = folder / f"profile-{len(list(folder.glob('profile-*')))}"
    profile.mkdir()
    env = {**os.environ, "TZ": tz} if tz else None
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )


class Browser:
    """Headless Chromium driven over the DevTools protocol, through a pipe rather than a websocket
    (``--remote-debugging-pipe``: Chromium reads JSON messages, each ending with a NUL byte, on its
    fd 3 and writes them on its fd 4), so that no websocket library is needed.

    One page (the first tab), real time (no virtual time budget). ``events`` keeps every protocol
    event received (``(method, params)``), e.g. ``Page.frameNavigated``; ``errors`` the page's
    uncaught exceptions and console errors.
    """

    def __init__(self, chromium: str, folder: Path, *, size: tuple[int, int] = (1280, 900), tz: str = "UTC"):
        profile = folder / f"cdp-profile-{len(list(folder.glob('cdp-profile-*')))}"
        profile.mkdir()
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()
        flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
        redirect = f'exec "$0" "$@" 3<&{to_chrome} 4>&{from_chrome}'
        self.log_path = profile.parent / f"{profile.name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "bash",  # dash's redirections take one-digit fd numbers only
                    "-c",
                    redirect,
                    chromium,
                    *flags,
                    "--remote-debugging-pipe",
                    f"--user-data-dir={profile}",
                    f"--window-size={size[0]},{size[1]}",
                    "about:blank",
                ],
                pass_fds=(to_chrome, from_chrome),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TZ": tz},
            )
        os.close(to_chrome)
        os.close(from_chrome)
        self.size = size
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._buffer = b""
        self._ids = 0
        self.session = ""
        try:
            targets = self.send("Target.getTargets", browser=True)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            attached = self.send(
                "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, browser=True
            )
            self.session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    # --- the protocol ---------------------------------------------------------------------------
    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            self._note(message["method"], message.get("params", {}))
        return message

    def _note(self, method: str, params: dict[str, Any]) -> None:
        self.events.append((method, params))
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(entry.get("text", "") + (f" ({entry['url']})" if entry.get("url") else ""))

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False, timeout: float = 30
    ) -> dict[str, Any]:
        """One command; its result (``browser``: to the browser itself, not the page)."""
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data) :]
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._ids:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    # --- the page -------------------------------------------------------------------------------
    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(
                f"{expression[:80]}: {details.get('exception', {}).get('description', details)}"
            )
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, *, navigating: bool = False) -> Any:
        """Poll ``expression`` until it is truthy; its value. ``navigating``: the page may be
        replaced meanwhile (an evaluation cut by a navigation is tried again)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as exc:
                cut = ("navigated or closed", "context was destroyed", "Cannot find context")
                if not navigating or not any(text in str(exc) for text in cut):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.1)
        body = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
        raise AssertionError(
            f"still false after {timeout} s: {expression}\n(last value {value!r})\npage:\n{body}"
        )

    def open(self, url: str) -> None:
        """Navigate and wait until the page's own loads are done (``body[data-state=ready]``)."""
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            "location.pathname.endsWith('/ui/') && document.body.dataset.state === 'ready'", navigating=True
        )

    def type_text(self, selector: str, text: str) -> None:
        """Focus ``selector``, clear it and type ``text`` as a user would (input events)."""
        self.evaluate(f"(e => {{ e.focus(); e.select(); }})(document.querySelector({json.dumps(selector)}))")
        self.send("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        common = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **common})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **common})

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(
            "(e => { e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })"
            f"(document.querySelector({json.dumps(selector)}))"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """A PNG of the page (``full_page``: its whole height, at the browser's width)."""
        width, height = self.size
        if full_page:
            content = self.send("Page.getLayoutMetrics")["cssContentSize"]
            height = max(height, int(content["height"]) + 1)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        finally:
            self.send("Emulation.clearDeviceMetricsOverride")
        path.write_bytes(base64.b64decode(data))

    def navigations(self) -> int:
        """How many times the main frame navigated (a reload counts)."""
        return sum(1 for m, p in self.events if m == "Page.frameNavigated" and not p["frame"].get("parentId"))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close", browser=True, timeout=5)
            except (OSError, RuntimeError, TimeoutError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Dom(HTMLParser):
    """The parts of the dumped DOM the test looks at: table rows, timeline bars, status texts,
    legend entries (``(kind, text)``) and the ids of hidden elements."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.bars: list[tuple[str, str]] = []
        self.texts: dict[str, str] = {}
        self.legend: dict[str, list[tuple[str, str]]] = {}
        self.hidden: set[str] = set()
        self.body_state = ""
        self._legend: str | None = None
        self._item: tuple[str, list[str]] | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._bar: tuple[str, list[str]] | None = None
        self._text_id: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "hidden" in attributes and attributes.get("id"):
            self.hidden.add(attributes["id"] or "")
        if tag == "ul" and "legend" in (attributes.get("class") or "").split():
            self._legend = attributes.get("id") or ""
            self.legend[self._legend] = []
        elif tag == "li" and self._legend is not None:
            self._item = (attributes.get("data-kind") or "", [])
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
        elif tag == "li" and self._item is not None and self._legend is not None:
            self.legend[self._legend].append((self._item[0], "".join(self._item[1])))
            self._item = None
        elif tag == "ul":
            self._legend = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._bar is not None:
            self._bar[1].append(data)
        if self._text_id is not None:
            self.texts[self._text_id] += data
        if self._item is not None:
            self._item[1].append(data)


# --- script mode: the screenshots of the docs ------------------------------------------------------
def read_token(tokens_file: Path, name: str = "SAMPLETRACK_READ_TOKEN") -> str:
    for line in tokens_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise SystemExit(f"no {name} in {tokens_file}")


def shoot(db_url: str, token: str, views: list[tuple[str, Path]], tz: str, width: int, folder: Path) -> None:
    """Full-page screenshots of ``views`` (``(view, png)``), through the harness."""
    chromium = subprocess.run(
        ["sh", "-c", "command -v chromium"], capture_output=True, text=True
    ).stdout.strip()
    if not chromium:
        raise SystemExit("Chromium is not installed: run tools/setup-system.sh")
    service = harness(db_url, token, folder)
    try:
        with Browser(chromium, folder, size=(width, 800), tz=tz) as browser:
            for view, out in views:
                browser.open(harness_url(service, view))
                time.sleep(0.5)  # fonts and layout settle
                browser.screenshot(out)
                print(f"{out}: {view}", file=sys.stderr)
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="web_page.py")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("shoot", help="full-page screenshots of views of the page")
    cmd.add_argument("--db", required=True, help="the service's database URL")
    cmd.add_argument("--tokens", type=Path, required=True, help="a tokens.env with SAMPLETRACK_READ_TOKEN")
    cmd.add_argument(
        "--view", action="append", required=True, help="a path such as /api/v1/ui/?beamline=id00"
    )
    cmd.add_argument("--out", action="append", type=Path, required=True, help="one PNG per --view")
    cmd.add_argument("--tz", default="Europe/Paris")
    cmd.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    if len(args.view) != len(args.out):
        parser.error("give one --out per --view")
    with tempfile.TemporaryDirectory() as folder:
        shoot(
            args.db,
            read_token(args.tokens),
            list(zip(args.view, args.out, strict=True)),
            args.tz,
            args.width,
            Path(folder),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
