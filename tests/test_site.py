"""Browser test of the built book: every page in _toc.yml, in headless Chromium, with no internet.

Run by `make site` (and `make test`, after the build) as `pytest -m browser tests/test_site.py`; the
plain unit-test run deselects it. It serves _build/html on 127.0.0.1, blocks every request that
leaves that server, and for each page checks that it loads, that its math is typeset by the
site's own MathJax, that its images have loaded, that its widgets are rendered by the site's own
ipywidgets bundle, that notebook pages carry the Binder launch link, and that the browser console
shows no error beyond the allow-list below. A full-page screenshot of each page goes to
artifacts/screenshots/.

Chromium is Debian's (/usr/bin/chromium): Playwright's own browser download cannot work here.
Without it the test skips, except under CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium as root, with nothing that phones home (background networking, component
# updates, sync): the page requests are the only traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Console errors and uncaught exceptions a good page still produces. Each entry is matched against
# the whole message; anything else fails the test.
CONSOLE_ALLOW_LIST = [
    # sphinx-thebe (0.3.1) writes its inline config script, `const THEBE_JS_URL = ...`, into every
    # page twice, and the second copy throws. Harmless: thebe is off (launch_buttons.thebe: false).
    re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
    # pydata-sphinx-theme reads the light/dark choice from localStorage; a fresh browser profile
    # has none, which it logs as an error before falling back to "auto".
    re.compile(r"Got invalid theme mode: \. Resetting to auto\."),
]
# Not needed, although TOOLING.md lists them as expected noise, because the site fixes them:
# - 404s for the widget bundle's icon fonts: _assets/widgets-offline.js points require.js at the
#   served copy of the bundle, so the fonts load from _static/widgets/.
# - ipywidgets calling the MathJax 2 API (MathJax.Hub.Queue): the same script translates those
#   calls to MathJax 3, so math in widget labels is typeset too.


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_docs() -> list[str]:
    """Every document in _toc.yml (root first), e.g. 'book/index', in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", doc) for doc in docs]


def _is_notebook(doc: str) -> bool:
    return (ROOT / f"{doc}.ipynb").is_file()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site() -> Path:
    """The built book; `make test` builds it before this test runs."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE / 'index.html'} is missing: build the book first (make book)")
    return SITE


@pytest.fixture(scope="session")
def base_url(site):
    """The built site, served from a thread on 127.0.0.1 at a free port."""
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        reason = (
            f"{CHROMIUM} not found; install Debian's chromium package "
            "(apt-get install -y chromium) to run the browser test"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class PageRecord:
    """What a page did in the browser: console errors, failed responses, blocked requests."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.errors: list[str] = []
        self.blocked: list[str] = []

    def on_console(self, message):
        if message.type == "error":
            self.errors.append(f"console error: {message.text} [{message.location.get('url')}]")

    def on_page_error(self, error):
        self.errors.append(f"uncaught exception: {error}")

    def on_response(self, response):
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def route(self, route):
        url = route.request.url
        if url.startswith(self.base_url + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:  # No internet: the site must not need anything from outside.
            self.blocked.append(url)
            route.abort()

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in CONSOLE_ALLOW_LIST)]

    def wait_for(self, page, condition: str, what: str, arg=None, timeout_ms: int = 20_000):
        """Wait until the JS `condition` holds; on timeout, fail saying what the page did."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_function(condition, arg=arg, timeout=timeout_ms)
        except PlaywrightTimeout:
            pytest.fail(
                f"timed out waiting for {what}\n"
                f"requests blocked (outside the site): {self.blocked}\n"
                "errors:\n" + "\n".join(self.errors)
            )


# Text of the article outside code, with typeset math removed: what a reader sees as prose.
PROSE_TEXT_JS = """() => {
    const article = document.querySelector("article").cloneNode(true);
    article.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
    return article.textContent;
}"""


@pytest.mark.parametrize("doc", _toc_docs())
def test_page(doc, base_url, browser):
    record = PageRecord(base_url)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", record.route)
    page = context.new_page()
    page.on("console", record.on_console)
    page.on("pageerror", record.on_page_error)
    page.on("response", record.on_response)
    try:
        response = page.goto(f"{base_url}/{doc}.html", wait_until="load")
        assert response is not None and response.status == 200, f"{doc}.html did not load"
        html = response.text()

        # Math: MathJax 3 (served from _static/mathjax; Sphinx loads it on pages with math) has
        # typeset every math element.
        has_mathjax = "_static/mathjax/" in html
        if has_mathjax:
            record.wait_for(
                page, "() => window.MathJax && MathJax.startup && MathJax.startup.promise", "MathJax to start"
            )
            page.evaluate("() => MathJax.startup.promise")
        n_math = page.locator("article .math").count()
        n_untypeset = page.locator("article .math:not(:has(mjx-container))").count()

        # Widgets: the embed manager replaced each widget view in the HTML by a rendered control.
        n_views = html.count('type="application/vnd.jupyter.widget-view+json"')
        if n_views:
            record.wait_for(
                page,
                """n => document.querySelectorAll(".widget-subarea .jupyter-widgets").length >= n
                       && document.querySelectorAll(".widget-subarea").length >= n""",
                f"{n_views} widget views to render",
                arg=n_views,
            )
            if has_mathjax:  # math queued by widget labels
                page.evaluate("() => MathJax.startup.promise")

        # Images, including any inside widget output: all fetched and decoded.
        record.wait_for(
            page,
            "() => Array.from(document.querySelectorAll('article img')).every(i => i.complete)",
            "the images to load",
        )
        page.evaluate("() => document.fonts.ready.then(() => true)")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{doc.replace('/', '__')}.png"), full_page=True)

        assert n_untypeset == 0, f"{n_untypeset} of {n_math} math elements were not typeset"
        prose = page.evaluate(PROSE_TEXT_JS)
        for delimiter in ("$$", "\\[", "\\(", "\\begin{"):
            assert delimiter not in prose, f"raw TeX {delimiter!r} left in the page text"
        if n_math:
            assert has_mathjax, "the page has math but does not load MathJax"
            assert page.locator("article mjx-container").count() >= n_math

        images = page.evaluate(
            "() => Array.from(document.querySelectorAll('article img'))"
            ".map(i => [i.currentSrc.slice(0, 80), i.naturalWidth])"
        )
        broken = [src for src, width in images if width == 0]
        assert not broken, f"images that did not load: {broken}"

        if n_views:
            subareas = page.locator(".widget-subarea")
            assert subareas.count() >= n_views
            for i in range(subareas.count()):
                widget = subareas.nth(i).locator(".jupyter-widgets").first
                assert widget.is_visible(), f"widget {i} is not visible"
                box = widget.bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0, f"widget {i} is empty"
            # Math in widget labels (description="$g$") is typeset, as in a notebook.
            labels = page.locator(".widget-subarea .widget-label").all_inner_texts()
            raw = [text for text in labels if re.search(r"\$[^$]+\$", text)]
            assert not raw, f"widget labels with untypeset math: {raw}"
            # An interact's control, e.g. a slider, is drawn (not just its container).
            controls = page.locator(
                ".widget-slider, .widget-dropdown, .widget-toggle-buttons, "
                ".widget-checkbox, .widget-text, .widget-button"
            )
            assert controls.count() >= 1 and controls.first.is_visible(), "no widget control drawn"

        if _is_notebook(doc):
            config = _config()
            repo = config["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
            binder = (
                f"{config['launch_buttons']['binderhub_url'].rstrip('/')}/v2/gh/{repo}/"
                f"{config['repository']['branch']}"
            )
            links = page.locator(f'a[href^="{binder}"]')
            assert links.count() >= 1, f"no Binder launch link starting with {binder}"
            assert f"{doc}.ipynb" in (links.first.get_attribute("href") or "")
            assert page.locator('a[href^="https://colab.research.google.com/github/"]').count() >= 1

        assert not record.blocked, f"requests outside the site (no internet): {record.blocked}"
        unexpected = record.unexpected_errors()
        assert not unexpected, "console errors:\n" + "\n".join(unexpected)
    finally:
        context.close()


def test_every_toc_page_was_built(site):
    """Each _toc.yml entry has a source file and an HTML page (a typo would skip a chapter)."""
    for doc in _toc_docs():
        assert (ROOT / f"{doc}.md").is_file() or _is_notebook(doc), f"no source for {doc}"
        assert (site / f"{doc}.html").is_file(), f"{doc} was not built"


def test_api_reference_and_equation_links(base_url, browser):
    """The API reference has its own entries for the top-level API, the genindex lists them, and an
    "eq. N" in a chapter links to the equation shown with the paper's number N."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", PageRecord(base_url).route)
    page = context.new_page()
    try:
        page.goto(f"{base_url}/book/api/wnlib.html", wait_until="load")
        for name in ("wnlib.weight_norm", "wnlib.data_dependent_init"):
            entry = page.locator(f'dt.sig[id="{name}"]')
            assert entry.count() == 1, f"no API entry {name}"
            assert name.rsplit(".", 1)[1] in entry.inner_text()

        page.goto(f"{base_url}/genindex.html", wait_until="load")
        targets = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
        for name in ("wnlib.weight_norm", "wnlib.data_dependent_init"):
            assert f"book/api/wnlib.html#{name}" in targets, f"genindex has no entry for {name}"

        # Implementation: "eq. 3" links to the gradient equation, which is numbered (3) as in the paper.
        page.goto(f"{base_url}/book/implementation.html", wait_until="load")
        link = page.locator('a.reference.internal[href="#equation-impl-eq-grad"]').first
        assert link.inner_text() == "3"
        eqno = page.locator("#equation-impl-eq-grad .eqno")
        assert eqno.inner_text().startswith("(3)")
        # From another chapter, to Theory's eq. 2.
        page.goto(f"{base_url}/book/experiments.html", wait_until="load")
        link = page.locator('a.reference.internal[href="theory.html#equation-eq-wn"]').first
        assert link.inner_text() == "2"
        link.click()
        page.wait_for_url("**/theory.html#equation-eq-wn")
        assert page.locator("#equation-eq-wn .eqno").inner_text().startswith("(2)")
    finally:
        context.close()
