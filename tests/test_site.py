"""Browser test of the built book: every page in _toc.yml, in headless Chromium, with no internet.

Run by `make site` (and `make test`, after the build) as `pytest -m browser tests/test_site.py`; the
plain unit-test run deselects it. It serves _build/html on 127.0.0.1, blocks every request that
leaves that server, and for each page checks that it loads, that its math is typeset by the
site's own MathJax, that its images have loaded, that its widgets are rendered by the site's own
ipywidgets bundle, that notebook pages carry the Binder launch link, that the browser console
shows no error beyond the allow-list below, that the server answered no request with an error and
that each page names an icon the site serves (else browsers ask for /favicon.ico). It loads each
page twice: at 1280 px and at phone width, 390 px, where no page may scroll sideways and nothing
may be cut off: whatever is wider than the column (a display equation, a table, code) must lie
inside a box of its own that scrolls sideways, and start where that box can scroll to. The same
check runs at 1280 px. A full-page screenshot of each page at each width goes to
artifacts/screenshots/ (NAME.png and NAME@390px.png).

Chromium is Debian's (/usr/bin/chromium): Playwright's own browser download cannot work here.
Without it the test skips, except under CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
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
    # pydata-sphinx-theme reads the light/dark choice from localStorage; a fresh browser profile
    # has none, which it logs as an error before falling back to "auto".
    re.compile(r"Got invalid theme mode: \. Resetting to auto\."),
]
# Not needed, although TOOLING.md lists them as expected noise, because the site fixes them:
# - 404s for the widget bundle's icon fonts: _assets/widgets-offline.js points require.js at the
#   served copy of the bundle, so the fonts load from _static/widgets/.
# - ipywidgets calling the MathJax 2 API (MathJax.Hub.Queue): the same script translates those
#   calls to MathJax 3, so math in widget labels is typeset too.
# - "Identifier 'THEBE_JS_URL' has already been declared": Sphinx 7.4 wrote sphinx-thebe's inline
#   config script into every page twice; book/_ext/inline_scripts.py writes each inline script once.
# - a 404 for /favicon.ico: the pages declare _static/favicon.svg (html.favicon in _config.yml).

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


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


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site quietly, noting every request the server answered with an error."""

    errors: list[str]  # set per server, by a subclass

    def log_request(self, code="-", size="-"):
        status = getattr(code, "value", code)
        if isinstance(status, int) and status >= 400:
            self.errors.append(f"server answered {status}: {self.path}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site() -> Path:
    """The built book; `make test` builds it before this test runs."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE / 'index.html'} is missing: build the book first (make book)")
    return SITE


@pytest.fixture(scope="session")
def server_errors() -> list[str]:
    """Every request the site's server answered with 4xx/5xx, whoever made it (the browser's own
    requests, such as /favicon.ico, do not reach Playwright's response events)."""
    return []


@pytest.fixture(scope="session")
def base_url(site, server_errors):
    """The built site, served from a thread on 127.0.0.1 at a free port."""
    handler_class = type("Handler", (_RecordingHandler,), {"errors": server_errors})
    handler = functools.partial(handler_class, directory=str(SITE))
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

# Can a reader see all of each drawn element that `selector` matches, at the page's scroll origin
# or by scrolling a box sideways? Walking up from the element: an ancestor that clips (overflow-x
# hidden or clip) must contain it; one that scrolls (auto or scroll) may have it stick out on the
# right, which the reader scrolls to, but not on the left, which no scrolling reaches; the outermost
# such box, or the element itself if there is none, must lie within the viewport. Returns one line
# per element that fails. MathJax's screen-reader copy (mjx-assistive-mml) is never drawn: skipped.
CUT_OFF_JS = """selector => {
    const width = window.innerWidth;
    const modes = new Map();
    const overflowX = e => {
        if (!modes.has(e)) modes.set(e, getComputedStyle(e).overflowX);
        return modes.get(e);
    };
    const name = e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
        + Array.from(e.classList).slice(0, 2).map(c => "." + c).join("");
    const span = r => `x ${Math.round(r.left)}..${Math.round(r.right)}`;
    const problem = e => {
        let box = e.getBoundingClientRect();
        if (box.width === 0 || box.height === 0 || e.closest("mjx-assistive-mml")) return null;
        const what = `${name(e)} (${span(box)})`;
        let outermost = null;
        for (let p = e.parentElement; p; p = p.parentElement) {
            const mode = overflowX(p);
            if (mode === "visible") continue;
            const outer = p.getBoundingClientRect();
            const scrolls = mode === "auto" || mode === "scroll";
            if (box.left < outer.left - 1)
                return `${what} starts left of ${name(p)} (${span(outer)}, overflow-x ${mode}), `
                    + (scrolls ? "where scrolling cannot reach it" : "which cuts it off");
            if (!scrolls && box.right > outer.right + 1)
                return `${what} is cut off by ${name(p)} (${span(outer)}, overflow-x ${mode})`;
            box = outer;
            outermost = p;
        }
        if (box.left < -1 || box.right > width + 1)
            return `${what} lies outside the ${width} px viewport`
                + (outermost ? `: so does ${name(outermost)} (${span(box)}) that holds it`
                              : " and is in no box that scrolls");
        return null;
    };
    return Array.from(document.querySelectorAll(selector)).map(problem).filter(p => p);
}"""


# A display equation: MathJax's box, which must fit, and the typeset math in it, which must start
# where that box can scroll to.
DISPLAY_MATH = 'mjx-container[display="true"], mjx-container[display="true"] > mjx-math'


def _cut_off(page, selector: str, what: str) -> str | None:
    """None if every `selector` element can be seen whole (CUT_OFF_JS), else a failure message."""
    problems = page.evaluate(CUT_OFF_JS, selector)
    if not problems:
        return None
    width = page.evaluate("() => window.innerWidth")
    shown = "\n".join(problems[:12]) + (f"\n... and {len(problems) - 12} more" if len(problems) > 12 else "")
    return f"at {width} px, {len(problems)} {what} cut off or out of reach:\n{shown}"


class LoadedPage:
    """A page of the site, opened in a fresh browser context and fully rendered."""

    def __init__(self, page, record: PageRecord, has_mathjax: bool, n_views: int):
        self.page, self.record = page, record
        self.has_mathjax, self.n_views = has_mathjax, n_views

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def check_layout(self) -> None:
        """No page scrolls sideways; no display equation, table or other article content is cut off
        or out of reach (see CUT_OFF_JS)."""
        page = self.page
        wide, width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        sideways = f"the page is {wide} px wide in a {width} px viewport: it scrolls sideways"
        failures = [
            sideways if wide > width else None,
            _cut_off(page, DISPLAY_MATH, "display equations (or their boxes)"),
            _cut_off(page, "article table", "tables"),
            _cut_off(page, "article, article *", "elements of the article"),
        ]
        failures = [f for f in failures if f]
        assert not failures, "\n\n".join(failures)

    def check_clean(self, server_errors: list[str], first_server_error: int) -> None:
        """Nothing fetched from outside, no console error beyond the allow-list, no failed request."""
        record = self.record
        assert not record.blocked, f"requests outside the site (no internet): {record.blocked}"
        unexpected = record.unexpected_errors() + server_errors[first_server_error:]
        assert not unexpected, "console and server errors:\n" + "\n".join(unexpected)


@contextlib.contextmanager
def _open_page(browser, base_url: str, doc: str, viewport: dict):
    """Open `doc` at `viewport` and wait until its math, widgets, images and fonts are ready."""
    record = PageRecord(base_url)
    context = browser.new_context(viewport=viewport)
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
        yield LoadedPage(page, record, has_mathjax, n_views)
    finally:
        context.close()


@pytest.mark.parametrize("doc", _toc_docs())
def test_page(doc, base_url, browser, server_errors):
    first_server_error = len(server_errors)
    with _open_page(browser, base_url, doc, DESKTOP) as loaded:
        page, n_views = loaded.page, loaded.n_views
        loaded.screenshot(doc.replace("/", "__"))

        n_math = page.locator("article .math").count()
        n_untypeset = page.locator("article .math:not(:has(mjx-container))").count()
        assert n_untypeset == 0, f"{n_untypeset} of {n_math} math elements were not typeset"
        prose = page.evaluate(PROSE_TEXT_JS)
        for delimiter in ("$$", "\\[", "\\(", "\\begin{"):
            assert delimiter not in prose, f"raw TeX {delimiter!r} left in the page text"
        if n_math:
            assert loaded.has_mathjax, "the page has math but does not load MathJax"
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

        # The page names its icon, and the site serves it: a browser asks for /favicon.ico only when
        # a page names none (it does so once per browser, late, so the server log alone can miss it).
        icons = page.eval_on_selector_all('head link[rel~="icon"]', "links => links.map(l => l.href)")
        assert icons, "the page declares no icon, so browsers ask for /favicon.ico, which is not there"
        for icon in icons:
            assert icon.startswith(base_url + "/"), f"icon {icon} is not on the site"
            assert page.request.get(icon).status == 200, f"icon {icon} is not served"

        loaded.check_layout()  # e.g. a wide table scrolls in its box rather than being clipped
        loaded.check_clean(server_errors, first_server_error)


@pytest.mark.parametrize("doc", _toc_docs())
def test_page_at_phone_width(doc, base_url, browser, server_errors):
    """At 390 px (a phone held upright) the page does not scroll sideways, and every display
    equation and table, and everything else in the article, can be seen whole, in place or by
    scrolling its own box."""
    first_server_error = len(server_errors)
    with _open_page(browser, base_url, doc, PHONE) as loaded:
        loaded.screenshot(f"{doc.replace('/', '__')}@{PHONE['width']}px")
        loaded.check_layout()
        # Figures shrink to the column; each is stored at 1.5x or more the pixels it is shown with
        # (the book's figures at 2x, widget frames at 100 dpi), so its text stays sharp when zoomed.
        shown = loaded.page.evaluate(
            "() => Array.from(document.querySelectorAll('article img'))"
            ".filter(i => i.offsetParent !== null && i.clientWidth > 120)"
            ".map(i => [i.currentSrc.slice(-40), i.naturalWidth, i.clientWidth])"
        )
        blurry = [(src, natural, width) for src, natural, width in shown if natural < 1.5 * width]
        assert not blurry, f"figures stored at under 1.5x their displayed width at 390 px: {blurry}"
        loaded.check_clean(server_errors, first_server_error)


def test_server_answered_every_request(base_url, server_errors):
    """After every page has been loaded: the server answered no request with an error. A request
    the browser makes late, after its page's test ended (an icon, say), is caught here."""
    assert not server_errors, "\n".join(server_errors)


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


# Frame widgets (wnbook.widgets.frame_widget): a box .wn-frames holding controls .wn-control-K and one
# frame per combination of their options, an <img> tagged .wn-frame-I-J-..., switched in the browser.
FRAME_JS = """box => {
    const shown = Array.from(box.querySelectorAll("img")).filter(i => i.offsetParent !== null);
    const tags = shown.flatMap(i => Array.from(i.classList).filter(c => c.startsWith("wn-frame-")));
    return tags.length === 1 ? tags[0].slice("wn-frame-".length).split("-").map(Number) : tags;
}"""
CONTROLS = (
    ".widget-slider, .widget-dropdown, .widget-toggle-buttons, .widget-checkbox, .widget-text, .widget-button"
)


def _shown_frame(box) -> list[int]:
    frame = box.evaluate(FRAME_JS)
    assert frame and all(isinstance(i, int) for i in frame), f"not exactly one frame shown: {frame}"
    return frame


def _options(control) -> int | None:
    """How many options a dropdown or toggle-buttons control has (None for a slider)."""
    if control.locator("select").count():
        return control.locator("select option").count()
    if control.locator("button").count():
        return control.locator("button").count()
    return None


def _choose(control, index: int, page) -> None:
    if control.locator("select").count():
        control.locator("select").select_option(index=index)
    elif control.locator("button").count():
        control.locator("button").nth(index).click()
    else:  # a slider: keyboard steps from the first option
        handle = control.locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("Home")
        for _ in range(index):
            page.keyboard.press("ArrowRight")


@pytest.mark.parametrize("doc", _toc_docs())
def test_every_widget_switches_to_the_frame_of_its_value(doc, base_url, browser, server_errors):
    """Operate every control of every widget in the static page (no kernel): the frame shown changes to
    the one drawn for that value, and only the control's own index moves."""
    first_server_error = len(server_errors)
    with _open_page(browser, base_url, doc, DESKTOP) as loaded:
        page = loaded.page
        boxes = page.locator(".wn-frames")
        stray = page.evaluate(
            f"() => Array.from(document.querySelectorAll('{CONTROLS}'))"
            ".filter(c => !c.closest('.wn-frames')).length"
        )
        assert stray == 0, f"{stray} widget controls would need a kernel (not in a frame widget)"
        if not loaded.n_views:
            assert boxes.count() == 0
            return
        assert boxes.count() >= 1, "the page has widgets but no frame widget"
        for b in range(boxes.count()):
            box = boxes.nth(b)
            start = _shown_frame(box)
            for k in range(len(start)):
                control = box.locator(f".wn-control-{k}")
                assert control.count() == 1, f"widget {b}: control {k} missing"
                n = _options(control)
                seen, index = [], 0
                while n is None or index < n:
                    _choose(control, index, page)
                    frame = _shown_frame(box)
                    if seen and frame[k] == seen[-1]:
                        break  # a slider at its last option
                    seen.append(frame[k])
                    assert frame[:k] + frame[k + 1 :] == start[:k] + start[k + 1 :], (
                        f"widget {b}: moving control {k} changed another control's frame: {frame}"
                    )
                    index += 1
                assert seen == list(range(len(seen))) and len(seen) >= 2, (
                    f"widget {b}, control {k}: the frames shown for its options were {seen}"
                )
                _choose(control, start[k], page)
                assert _shown_frame(box) == start
        loaded.check_clean(server_errors, first_server_error)
