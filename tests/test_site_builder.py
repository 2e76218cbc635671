"""The site builder on a tiny made-up course (no browser: tests/browser/test_site.py opens the real site in
Chromium): what each input becomes, and that bad input stops the build with its name."""

import base64
import io

import pytest

pytest.importorskip("nbconvert", reason="building the site needs the dev extra")
pytest.importorskip("latex2mathml", reason="building the site needs the dev extra")

import nbformat  # noqa: E402

from minillama4.course.site import MARKER, SiteError, build  # noqa: E402


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _notebook(path, markdown: str, outputs=()):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    code.outputs = list(outputs)
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), code]
    nbformat.write(nb, path)


@pytest.fixture
def course(tmp_path):
    """A repository with a README, two chapters, an extra notebook, a doc, a package file and an image."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "docs" / "images").mkdir(parents=True)
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (root / "docs" / "images" / "shot.png").write_bytes(base64.b64decode(_png()))
    (root / "docs" / "notes.md").write_text("# Notes\n\nBack to [the course](../README.md#the-course).\n")
    (root / "README.md").write_text(
        "# tiny\n\nIntro, see [the course](#the-course).\n\n## The course\n\nStart with "
        "[chapter 00](notebooks/00_first.ipynb) and read [the notes](docs/notes.md).\n\n"
        "![a screenshot](docs/images/shot.png)\n")
    picture = nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})
    widget = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/plain": "progress:   0%|"})
    _notebook(root / "notebooks" / "00_first.ipynb",
              "# 00 · First\n\nThe score $\\sigma(\\ell)$ and\n\n$$\\Big\\lfloor \\frac{p}{F} \\Big\\rfloor$$\n\n"
              "## Part one\n\nThe code: [mod](../pkg/mod.py), next: [01](01_second.ipynb#Part-two).",
              [picture, widget])
    _notebook(root / "notebooks" / "01_second.ipynb", "# 01 · Second: more\n\n## Part two\n\nText.")
    _notebook(root / "notebooks" / "extra.ipynb", "# Extra\n\nMore.")
    return root


def test_each_input_becomes_its_page(course, tmp_path):
    out = tmp_path / "site"
    pages = {p.relative_to(out).as_posix() for p in build(out, root=course)}
    assert pages == {"index.html", "package.html", "notes.html", "00_first.html", "01_second.html", "extra.html",
                     "src/pkg/mod.py.html"}
    first = (out / "00_first.html").read_text()
    assert "<math" in first and "$" not in first and "\\sigma" not in first  # math drawn as MathML, not left as TeX
    assert "&#x0230A;" in first  # the \Big\lfloor delimiter, which latex2mathml leaves as a name
    assert 'href="src/pkg/mod.py.html"' in first and 'href="01_second.html#Part-two"' in first
    assert "interactive widget" in first and "progress:" not in first  # a widget: a note, not its text fallback
    assert 'href="01_second.html">01 · Second' in first and "← " not in first  # next, no previous
    figure = next((out / "figures" / "00_first").glob("*.png"))
    assert f'src="figures/00_first/{figure.name}"' in first
    home = (out / "index.html").read_text()
    assert 'href="package.html#the-course"' in home  # the README's own anchor, on the page that shows it
    assert 'href="00_first.html#Part-one"' in home and 'src="images/shot.png"' in home
    assert (out / "images" / "shot.png").read_bytes() == (course / "docs" / "images" / "shot.png").read_bytes()
    assert 'id="the-course"' in (out / "package.html").read_text()
    assert 'href="package.html#the-course"' in (out / "notes.html").read_text()
    assert 'href="../../style.css"' in (out / "src" / "pkg" / "mod.py.html").read_text()
    assert "http" not in "".join(p.read_text() for p in out.rglob("*.html")) + (out / "style.css").read_text()


def test_a_broken_link_stops_the_build_with_its_name(course, tmp_path):
    _notebook(course / "notebooks" / "01_second.ipynb", "# 01\n\nSee [gone](../pkg/gone.py).")
    with pytest.raises(SiteError, match=r"notebooks/01_second.ipynb links to \.\./pkg/gone.py"):
        build(tmp_path / "site", root=course)


def test_a_formula_the_converter_cannot_draw_stops_the_build(course, tmp_path):
    _notebook(course / "notebooks" / "01_second.ipynb", "# 01\n\n$\\notacommand x$")
    with pytest.raises(SiteError, match=r"cannot draw \\notacommand"):
        build(tmp_path / "site", root=course)


def test_it_replaces_its_own_previous_build_and_nothing_else(course, tmp_path):
    out = tmp_path / "site"
    build(out, root=course)
    (out / "stale.html").write_text("from an older build")
    build(out, root=course)
    assert (out / MARKER).is_file() and not (out / "stale.html").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SiteError, match="not empty"):
        build(other, root=course)
    assert (other / "notes.txt").read_text() == "keep me"
