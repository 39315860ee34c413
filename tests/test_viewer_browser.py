"""The HTML viewer in a real browser: Debian's headless Chromium (/usr/bin/chromium), driven by
Playwright for Python (never a downloaded browser). A run page draws the graph and the path,
a click opens a step's detail, a screenshot is a real picture; a page of hostile text runs no
script of its own and loads nothing.

Skipped when Chromium or Playwright is missing; with FLOWLANG_REQUIRE_SERVICES=1 (CI) that is a
failure instead. Every wait is bounded; the browser's process group is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_viewer import FLOWS, HOSTILE, HOSTILE_FLOW, account_call

from flowlang.flow.load import load_flow, load_flow_text
from flowlang.graph.html import coverage_page, graph_page, run_page
from flowlang.graph.model import Coverage, flow_graph
from flowlang.graph.picture import flow_picture

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds any one browser operation may take.
WAIT_MS = 15_000


def _missing(reason: str) -> None:
    if os.environ.get("FLOWLANG_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (FLOWLANG_REQUIRE_SERVICES=1: the browser test must run)")
    pytest.skip(reason)


def _processes_using(marker: str) -> list[int]:
    """Ids of this machine's processes whose command line holds ``marker`` (our profile)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _stop_groups(marker: str) -> None:
    """Stop the process group of every browser process left with our profile."""
    ours = os.getpgid(0)
    for pid in _processes_using(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != ours:  # Playwright starts the browser in a group of its own
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


class Browser:
    """Chromium with a fresh profile of its own, started on the first page it opens (after the
    test has run its flows: Playwright's sync API keeps an event loop running meanwhile)."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.driver: Any = None
        self.context: Any = None

    def open(self, path: Path) -> tuple[Any, dict[str, list[Any]]]:
        """A page showing the file at ``path``, with what it reports: console messages,
        dialogs, page errors and every request."""
        if self.context is None:
            from playwright.sync_api import sync_playwright

            self.profile.mkdir()
            self.driver = sync_playwright().start()
            self.context = self.driver.chromium.launch_persistent_context(
                str(self.profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=FLAGS,
                timeout=WAIT_MS,
                viewport={"width": 1280, "height": 900},
            )
            self.context.set_default_timeout(WAIT_MS)
        seen: dict[str, list[Any]] = {"console": [], "dialogs": [], "errors": [], "requests": []}
        page = self.context.new_page()
        page.on("console", lambda message: seen["console"].append(message.text))
        page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: seen["errors"].append(str(error)))
        page.on("request", lambda request: seen["requests"].append(request.url))
        page.goto(path.as_uri(), wait_until="load", timeout=WAIT_MS)
        return page, seen

    def stop(self) -> None:
        try:
            if self.context is not None:
                self.context.close()
        finally:
            if self.driver is not None:
                self.driver.stop()
            _stop_groups(str(self.profile))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Chromium (started by the first page opened), stopped with its process group."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright (Python) is not installed: pip install playwright")
    launcher = Browser(tmp_path / "chromium-profile")
    try:
        yield launcher
    finally:
        launcher.stop()


def _png_is_a_picture(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values of a PNG's pixel data (a blank
    page gives a handful; a drawn one many)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, width, height, pixels = 8, 0, 0, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            pixels += body
        at += 12 + length
    return width, height, len(set(zlib.decompress(pixels)))


def test_a_run_page_draws_the_path_and_a_click_opens_a_steps_detail(
    browser: Browser, tmp_path: Path
) -> None:
    flow, trace, instructions, status = account_call()
    graph = flow_graph(flow)
    picture = flow_picture(graph)
    target = tmp_path / "call.html"
    target.write_text(run_page(graph, trace, status=status, instructions=instructions))
    page, seen = browser.open(target)
    assert page.locator("svg.flowlang-graph g.node").count() == len(picture.nodes)
    assert page.locator("svg.flowlang-graph g[data-edge]").count() == len(picture.edges)
    path = graph.path(trace)
    notes = page.locator("g.edge.taken tspan.note").all_text_contents()
    assert sorted(int(note) for note in notes) == list(range(1, len(path) + 1))
    verify = next(at for at, node in enumerate(picture.nodes) if node.step == "verify")
    page.locator(f'svg [data-node="{verify}"]').click()
    page.wait_for_selector(f'#detail[data-shown="0:{verify}"]', timeout=WAIT_MS)
    assert page.locator("#detail h2").text_content() == "verify"
    detail = page.locator("#detail").inner_text()
    assert "POST https://billing.example.com/api/accounts/12345678/verify" in detail
    assert "response status" in detail and "200" in detail
    assert "Bearer [redacted]" in detail
    assert page.locator(f'svg [data-node="{verify}"]').get_attribute("class").endswith("selected")
    page.get_by_role("button", name="check", exact=True).click()  # the steps in order
    page.wait_for_selector("#detail h2:text-is('check')", timeout=WAIT_MS)
    assert "greater_than" in page.locator("#detail").inner_text()
    shot = tmp_path / "call.png"
    page.screenshot(path=str(shot), full_page=True, timeout=WAIT_MS)
    width, height, values = _png_is_a_picture(shot.read_bytes())
    assert width >= 1280 and height >= 600
    assert values > 50, "the screenshot is blank"
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [target.as_uri()]


def test_a_hostile_page_runs_no_injected_script_and_loads_nothing(
    browser: Browser, tmp_path: Path
) -> None:
    flow = load_flow_text(HOSTILE_FLOW, name="hostile")
    graph = flow_graph(flow)
    trace = [
        {
            "step": flow.start,
            "type": "say",
            "outcome": text,
            "detail": {"request": {"method": "GET", "url": text}, "response": {"body": text}},
        }
        for text in HOSTILE
    ]
    instructions = [{"action": "say", "step": flow.start, "text": text} for text in HOSTILE]
    target = tmp_path / "hostile.html"
    target.write_text(run_page(graph, trace, status="ended", instructions=instructions))
    page, seen = browser.open(target)
    for at in range(page.locator("svg g.node").count()):  # every detail drawn
        page.locator(f'svg [data-node="{at}"]').click()
        page.wait_for_selector(f'#detail[data-shown="0:{at}"]', timeout=WAIT_MS)
    page.locator(f'svg [data-node="{1}"]').click()
    page.wait_for_selector('#detail[data-shown="0:1"]', timeout=WAIT_MS)
    detail = page.locator("#detail").inner_text()
    assert "</script><script>window.pwned=1</script>" in detail  # shown as text
    assert "<img src=x onerror=" in detail
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("script").count() == 2
    assert page.locator("img, iframe, object, embed").count() == 0
    assert seen["dialogs"] == [] and seen["errors"] == []
    assert not [text for text in seen["console"] if "pwned" in text]
    assert [url for url in seen["requests"] if not url.startswith("data:")] == [target.as_uri()]
    # the policy holds: a load the page did not ask for is refused before it leaves (a
    # listener on loopback sees no connection)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        violated = page.evaluate(
            """(port) => new Promise((done) => {
                const seen = [];
                document.addEventListener("securitypolicyviolation", (e) => {
                    seen.push(e.effectiveDirective);
                    if (seen.length === 2) done(seen.sort());
                });
                const image = document.createElement("img");
                image.src = "http://127.0.0.1:" + port + "/flowlang-viewer-test.png";
                document.body.appendChild(image);
                fetch("http://127.0.0.1:" + port + "/fetch").catch(() => {});
                setTimeout(() => done(seen.sort()), 5000);
            })""",
            port,
        )
        assert violated == ["connect-src", "img-src"]
        page.wait_for_timeout(300)  # a connection, had one been made, would be waiting by now
        with pytest.raises(BlockingIOError):
            listener.accept()


#: Every text of every picture on a page as the browser lays it out: per picture, the SVG's
#: size and the box (getBBox, in the SVG's units) of each node's and each edge's text and of
#: each node's shape.
_BOXES = """() => [...document.querySelectorAll("svg.flowlang-graph")].map((svg) => {
    const box = (element) => { const b = element.getBBox(); return [b.x, b.y, b.width, b.height]; };
    const view = svg.viewBox.baseVal;
    return {
        size: [view.width, view.height],
        nodes: [...svg.querySelectorAll("g.node")].map((g) => box(g.firstElementChild)),
        texts: [...svg.querySelectorAll("g.node > text, g[data-edge] > text")].map(
            (text) => [text.parentElement.hasAttribute("data-edge") ? "edge" : "node", box(text)]),
    };
})"""


def _overlap(first: list[float], second: list[float]) -> float:
    """The area two boxes share."""
    width = min(first[0] + first[2], second[0] + second[2]) - max(first[0], second[0])
    height = min(first[1] + first[3], second[1] + second[3]) - max(first[1], second[1])
    return max(0.0, width) * max(0.0, height)


def test_every_text_of_every_picture_is_legible_in_the_browser(
    browser: Browser, tmp_path: Path
) -> None:
    """Legible: as Chromium draws the pages (its fonts, its text metrics), no text of a node or
    an edge overlaps another, no edge's text lies on a node, and all of it is inside its SVG;
    the page's own script runs (a click opens a detail) under the policy's hash."""
    flow, trace, instructions, status = account_call()
    graph = flow_graph(flow)
    coverage = Coverage(graph)
    coverage.add(trace)
    pages = {
        "graph.html": graph_page(
            [flow_picture(flow_graph(load_flow(path))) for path in FLOWS], title="examples"
        ),
        "run.html": run_page(graph, trace, status=status, instructions=instructions),
        "coverage.html": coverage_page([coverage], title="coverage"),
    }
    checked = 0
    for name, text in pages.items():
        target = tmp_path / name
        target.write_text(text, encoding="utf-8")
        page, seen = browser.open(target)
        pictures = page.evaluate(_BOXES)
        assert pictures, name
        for picture in pictures:
            width, height = picture["size"]
            texts = picture["texts"]
            assert texts
            for at, (kind, box) in enumerate(texts):
                x, y, w, h = box
                assert w > 0 and h > 0, (name, box)
                assert x >= -0.5 and y >= -0.5, (name, kind, box)
                assert x + w <= width + 0.5 and y + h <= height + 0.5, (name, kind, box, width)
                for other_kind, other in texts[at + 1 :]:
                    assert _overlap(box, other) < 1.0, (name, kind, box, other_kind, other)
                if kind == "edge":
                    for node in picture["nodes"]:
                        assert _overlap(box, node) < 1.0, (name, box, node)
                checked += 1
        page.locator('svg [data-node="1"]').first.click()
        page.wait_for_selector('#detail[data-shown="0:1"]', timeout=WAIT_MS)
        assert seen["errors"] == [] and not [t for t in seen["console"] if "Content" in t]
    assert checked > 100
