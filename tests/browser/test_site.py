"""The course website (`minillama4 site build`) in a real browser: Debian's Chromium driven by Playwright, as in
test_explore_notebook.py.

The test builds the site into a temporary folder through the command line, then opens every page from disk and
checks that it loaded without a console error or a page error, that it asked for nothing outside the site (every
request must be a file inside the build folder: no CDN, no font or script from the network), that every image
decoded (naturalWidth > 0), and that every link it has to another page of the site points to a file that exists
and, when it names an anchor, to an element with that id. It saves screenshots of the landing page and of one
chapter (into $MINILLAMA4_SCREENSHOTS, e.g. docs/images for the README, else the test's temporary folder).

Skipped like the explorer test where Chromium or Playwright is missing (a failure under MINILLAMA4_REQUIRE_BROWSER=1).
"""

import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from minillama4.cli import main
from test_explore_notebook import CHROMIUM, CHROMIUM_ARGS, MAX_PNG_BYTES, _save_png, _unavailable

SCREENSHOT_CHAPTER = "04_attention_irope.html"  # math, code, outputs and pictures on one page

# Scroll to the heading of the first section that has a picture: prose, math, code and a figure in one view.
SECTION_WITH_A_PICTURE = """() => {
    const img = document.querySelector('.jp-RenderedImage img');
    const before = [...document.querySelectorAll('main h2')].filter(h => h.offsetTop < img.offsetTop);
    (before.length ? before[before.length - 1] : img).scrollIntoView({block: 'start'});
}"""

# What the page has, read in the browser: every <img> (decoded or not), every link, every id.
PAGE_FACTS = """() => ({
    images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
})"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MINILLAMA4_CHROMIUM)")
    for module in ("playwright", "nbconvert", "latex2mathml"):
        try:
            __import__(module)
        except ImportError:
            _unavailable(f"{module} is not installed: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("site")
    t0 = time.monotonic()
    assert main(["site", "build", str(out)]) == 0
    print(f"site built in {time.monotonic() - t0:.1f} s")
    return out


def _in_site(url: str, out: Path) -> Path | None:
    """The file a file:// URL names, if it lies inside the site folder; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    path = Path(unquote(parts.path)).resolve()
    return path if path.is_relative_to(out) else None


def test_every_page_loads_offline_with_its_images_and_links_in_chromium(site, tmp_path):
    from playwright.sync_api import sync_playwright

    out = site.resolve()
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    chapters = [p for p in pages if p[:2].isdigit()]
    assert "index.html" in pages and SCREENSHOT_CHAPTER in chapters, pages
    shots = Path(os.environ.get("MINILLAMA4_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    problems, ids, links = [], {}, []  # links: (page, href) to check once every page's ids are known
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            current = {"name": None}
            page.on("console", lambda m: problems.append(f"{current['name']}: console.{m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"{current['name']}: page error: {e}"))

            def only_the_site(route):  # a request for anything outside the build folder is a defect, and is refused
                if _in_site(route.request.url, out) is None:
                    problems.append(f"{current['name']}: requested {route.request.url[:120]}")
                    route.abort()
                else:
                    route.continue_()

            page.route("**/*", only_the_site)
            for name in pages:
                current["name"] = name
                page.goto((out / name).as_uri(), wait_until="load")
                facts = page.evaluate(PAGE_FACTS)
                ids[name] = set(facts["ids"])
                problems += [f"{name}: image did not load: {i['src'][:120]}" for i in facts["images"] if not i["ok"]]
                links += [(name, href) for href in facts["links"]]
                if name == "index.html" or name == SCREENSHOT_CHAPTER:
                    shot = "site_index.png" if name == "index.html" else "site_chapter.png"
                    if name == SCREENSHOT_CHAPTER:
                        page.evaluate(SECTION_WITH_A_PICTURE)
                    size = _save_png(page.screenshot(), shots / shot)
                    assert size < MAX_PNG_BYTES, f"{shot} is {size} bytes"
        finally:
            browser.close()

    for name, href in links:
        parts = urlsplit(href)
        if parts.scheme in ("http", "https", "mailto"):
            continue  # a reference for the reader (none is loaded: requests outside the site were refused above)
        target = _in_site(href, out)
        if target is None or not target.is_file():
            problems.append(f"{name}: link to a missing file: {href}")
        elif parts.fragment and not {parts.fragment, unquote(parts.fragment)} & ids[target.relative_to(out).as_posix()]:
            problems.append(f"{name}: link to a missing anchor: {href}")  # (the browser tries both spellings)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])

    # every page can be reached from the landing page by following links (the navigation is complete)
    graph = {}
    for name, href in links:
        target = _in_site(href, out)
        if target is not None:
            graph.setdefault(name, set()).add(target.relative_to(out).as_posix())
    reached, todo = {"index.html"}, ["index.html"]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert reached >= set(pages), f"pages no link leads to: {sorted(set(pages) - reached)}"
    print(f"{len(pages)} pages, {len(links)} links checked; screenshots in {shots}")
