"""The course as a static website, built offline from the executed notebooks, the README and docs/.

    minillama4 site build OUT/          then open OUT/index.html in a browser

What becomes what:
    notebooks/NN_*.ipynb  → OUT/NN_*.html     one page per chapter, with its committed outputs; its pictures in
                                               OUT/figures/NN_*/
    notebooks/other.ipynb → OUT/other.html    after the chapters (e.g. the explorers; their widgets need a kernel)
    README.md             → OUT/index.html    the README's introduction, the chapter map and its screenshots
                          → OUT/package.html  the README's sections (quickstart, the package, benchmarks, ...)
    docs/NAME.md          → OUT/NAME.html     docs/exercises.md also gets the table of graded exercises
    a linked repository file or folder → OUT/src/PATH.html, shown as highlighted source
    a linked image        → OUT/images/NAME

Notebook cells go through nbconvert with its JupyterLab markup and a small template of our own: the cells only,
no require.js, no MathJax, no widget scripts (a widget's output becomes a note). Math ($...$, $$...$$) becomes MathML at build time (latex2mathml),
which browsers draw without scripts. Every page uses one stylesheet, OUT/style.css, and refers to nothing outside
OUT/, so the site reads offline. A link to a file that does not exist stops the build with its name.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

SITE_CSS = Path(__file__).parent / "assets" / "site.css"
MARKER = ".minillama4-site"  # marks OUT/ as a site build, so a rebuild may clear it
MAX_SOURCE_BYTES = 1_000_000  # larger linked files are not shown as source pages
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
SKIP_NAMES = {"__pycache__", ".ipynb_checkpoints"}
MATHML_NS = "http://www.w3.org/1998/Math/MathML"  # implied for <math> in HTML: dropped, so pages name no URL
WIDGET_NOTE = "An interactive widget is shown here when the notebook runs in JupyterLab."

# the cells of one notebook: nbconvert's JupyterLab markup, minus its scripts (widgets, JavaScript outputs, state)
CELLS_TEMPLATE = """{%- extends 'lab/base.html.j2' -%}
{%- block data_widget_view -%}
<div class="jp-OutputArea-output widget-note">""" + WIDGET_NOTE + """</div>
{%- endblock data_widget_view -%}
{%- block data_javascript -%}{%- endblock data_javascript -%}
{%- block footer -%}{%- endblock footer -%}
{%- block input -%}
<div class="jp-CodeMirrorEditor jp-Editor jp-InputArea-editor" data-type="inline">
{{ cell.source | highlight_code(metadata=cell.metadata) }}
</div>
{%- endblock input -%}
"""

PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ page.title }} · minillama4</title>
<link rel="stylesheet" href="{{ up }}style.css">
</head>
<body>
<nav class="site-nav">
<a class="site-home" href="{{ up }}index.html">minillama4</a>
<ol class="site-chapters">
{%- for c in chapters %}
<li{% if c.path == page.path %} class="current"{% endif %}><a href="{{ up }}{{ c.path }}">{{ c.short_title }}</a></li>
{%- endfor %}
</ol>
<ul class="site-pages">
{%- for p in extras %}
<li{% if p.path == page.path %} class="current"{% endif %}><a href="{{ up }}{{ p.path }}">{{ p.short_title }}</a></li>
{%- endfor %}
</ul>
</nav>
<main class="{{ page.kind }}">
{%- macro pager() %}
<div class="pager">
{%- if prev %}<a class="prev" href="{{ up }}{{ prev.path }}">← {{ prev.short_title }}</a>{% endif %}
<a class="up" href="{{ up }}index.html">all chapters</a>
{%- if next %}<a class="next" href="{{ up }}{{ next.path }}">{{ next.short_title }} →</a>{% endif %}
</div>
{%- endmacro %}
{%- if page.kind == "chapter" %}{{ pager() }}{% endif %}
{{ body }}
{%- if page.kind == "chapter" %}{{ pager() }}{% endif %}
</main>
</body>
</html>
"""


class SiteError(ValueError):
    """The site cannot be built as asked (a broken link, a missing input, an unsafe output folder)."""


@dataclass(eq=False)
class Page:
    path: str  # where it is written, relative to OUT/ ("03_moe_layer.html", "src/minillama4/moe.py.html")
    title: str  # the page's <title> and heading
    kind: str  # "chapter" | "home" | "doc" | "source"
    body: str = ""  # the page's HTML, without the navigation
    short_title: str = ""  # the navigation's label

    def __post_init__(self):
        self.short_title = self.short_title or self.title


# ------------------------------------------------------------------------------------------ links and math
def github_slug(text: str) -> str:
    """A heading's id as GitHub makes it for Markdown files: lower case, punctuation dropped, spaces → '-'."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def tex_to_mathml(tex: str, display: bool) -> str:
    """LaTeX → MathML, drawn by the browser itself. A command latex2mathml does not know is an error, not a
    silently misprinted formula."""
    from latex2mathml.converter import convert
    from latex2mathml.symbols_parser import convert_symbol

    def symbol(m):  # latex2mathml leaves a delimiter after \big, \Big... as its name (\Big\lfloor)
        code = convert_symbol(m.group(1))
        return f">&#x{code};<" if code else m.group(0)

    mathml = convert(tex, display="block" if display else "inline").replace(f' xmlns="{MATHML_NS}"', "", 1)  # HTML5
    mathml = re.sub(r"\\([_%&$#{} ])", r"\1", mathml)  # \_ inside \text{...} is kept escaped by latex2mathml
    mathml = re.sub(r">(\\[A-Za-z]+)<", symbol, mathml)
    unknown = sorted(set(re.findall(r">(\\[A-Za-z]+)<", mathml)))
    if unknown:
        raise SiteError(f"cannot draw {', '.join(unknown)} in the formula {tex!r}")
    return mathml


class Linker:
    """Turns links written in the repository's Markdown (relative to the file they are in) into links inside the
    site, and collects the images and source files the site must then contain."""

    def __init__(self, root: Path, pages_of: dict[Path, str]):
        self.root = root
        self.pages_of = pages_of  # repository file → the site page showing it
        self.images: dict[Path, str] = {}  # repository image → its path in the site
        self.sources: dict[Path, str] = {}  # repository file or folder shown as a source page → its path

    def url(self, href: str, source: Path, page: str) -> str:
        """The site URL (relative to `page`) for `href` as written in `source`."""
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I):  # http:, mailto:, data: ... stay as written
            return href
        path, _, fragment = href.partition("#")
        fragment = "#" + fragment if fragment else ""
        if not path:  # an anchor in the same document, which may be shown on another page (the README)
            target = self.pages_of[source]
            return fragment if target == page else _relative(target, page) + fragment
        target = (source.parent / path).resolve()
        if not target.is_relative_to(self.root) or not target.exists():
            raise SiteError(f"{source.relative_to(self.root)} links to {href}, which does not exist in the "
                            "repository")
        if target in self.pages_of:
            return _relative(self.pages_of[target], page) + fragment
        if target.suffix.lower() in IMAGE_SUFFIXES:
            return _relative(self.image(target), page)
        return _relative(self.source(target), page) + fragment

    def image(self, target: Path) -> str:
        if target not in self.images:
            name = "images/" + target.name
            if name in self.images.values():
                name = "images/" + target.relative_to(self.root).as_posix().replace("/", "_")
            self.images[target] = name
        return self.images[target]

    def source(self, target: Path) -> str:
        rel = target.relative_to(self.root).as_posix()
        if target.is_dir():
            self.sources[target] = f"src/{rel}/index.html" if rel != "." else "src/index.html"
        elif _is_text(target):
            self.sources[target] = f"src/{rel}.html"
        else:
            raise SiteError(f"a link points to {rel}, which is not a text file the site can show")
        return self.sources[target]


def _relative(target: str, page: str) -> str:
    """`target` (relative to OUT/) as seen from the folder of `page`."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def _is_text(path: Path) -> bool:
    if path.stat().st_size > MAX_SOURCE_BYTES:
        return False
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    return True


def markdown_to_html(text: str, linker: Linker, source: Path, page: str, slug=None, attachments=None) -> str:
    """Markdown with math → HTML: nbconvert's renderer (the one JupyterLab's markup follows), with links made
    site links, math made MathML, and heading ids from `slug` (default: nbconvert's, JupyterLab's style)."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class Renderer(IPythonRenderer):
        def link(self, text, url, title=None):
            return super().link(text, linker.url(url, source, page), title)

        def image(self, text, url, title=None):
            if not url.startswith("attachment:"):
                url = linker.url(url, source, page)
            return super().image(text, url, title)

        def heading(self, text, level, **attrs):
            if slug is None:
                return super().heading(text, level, **attrs)
            anchor = slug(re.sub(r"<[^>]+>", "", html.unescape(text)))
            return (f'<h{level} id="{anchor}">{text}<a class="anchor-link" href="#{anchor}">¶</a></h{level}>\n')

        def block_math(self, body):
            return tex_to_mathml(body, display=True)

        def inline_math(self, body):
            return tex_to_mathml(body, display=False)

        def latex_environment(self, name, body):
            return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    renderer = Renderer(escape=False, attachments=attachments or {})
    return MarkdownWithMath(renderer=renderer).render(text)


# ------------------------------------------------------------------------------------------ the pages
def _notebook_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return fallback


def _cells_exporter(linker: Linker, current: dict):
    """nbconvert's HTML exporter with our template; the Markdown cells of the notebook named in `current`
    (source, page) go through markdown_to_html; pictures are extracted into files (resources["outputs"])."""
    import jinja2
    from nbconvert.exporters import TemplateExporter
    from nbconvert.filters import Highlight2HTML
    from nbconvert.preprocessors import ExtractOutputPreprocessor
    from traitlets.config import Config

    @jinja2.pass_context
    def markdown2html(context, text):
        attachments = context.get("cell", {}).get("attachments", {})
        return markdown_to_html(text, linker, current["source"], current["page"], attachments=attachments)

    class CellsExporter(TemplateExporter):  # nbconvert's HTMLExporter without its page-wide BeautifulSoup pass
        output_mimetype = "text/html"

        def default_filters(self):
            yield from super().default_filters()
            yield ("highlight_code", Highlight2HTML(pygments_lexer="ipython3", parent=self))

    priority = ["application/vnd.jupyter.widget-view+json", "text/html", "text/markdown", "image/svg+xml",
                "text/latex", "image/png", "image/jpeg", "text/plain"]  # a widget: our note, not its text repr
    exporter = CellsExporter(config=Config({"NbConvertBase": {"display_data_priority": priority}}),
                             template_name="lab", template_file="minillama4_cells.html.j2",
                             extra_loaders=[jinja2.DictLoader({"minillama4_cells.html.j2": CELLS_TEMPLATE})],
                             exclude_input_prompt=True, exclude_output_prompt=True,
                             filters={"markdown2html": markdown2html})
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    return exporter


def chapter_page(nb, path: Path, page: Page, exporter, current: dict) -> dict[str, bytes]:
    """Fill `page` with the cells of notebook `nb` (read from `path`) as committed: outputs included, nothing is
    executed. Return its pictures, by their path in the site."""
    current.update(source=path, page=page.path)
    body, resources = exporter.from_notebook_node(nb, {"output_files_dir": f"figures/{path.stem}",
                                                       "unique_key": path.stem})
    page.body = f'<div class="jp-Notebook">\n{body}\n</div>'
    return resources["outputs"]


def _sections(text: str) -> tuple[str, str]:
    """A Markdown file split into its introduction (before the first '## ' heading) and the rest."""
    m = re.search(r"^## ", text, re.M)
    return (text, "") if m is None else (text[:m.start()], text[m.start():])


def _chapter_map(chapters: list[Page]) -> str:
    """Each chapter with links to its sections (its '## ' headings, as rendered)."""
    items = []
    for c in chapters:
        sections = re.findall(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', c.body, re.S)
        links = " · ".join(f'<a href="{c.path}#{anchor}">{title}</a>' for anchor, title in sections)
        items.append(f'<li><a class="chapter" href="{c.path}">{html.escape(c.title)}</a>'
                     + (f'<p class="sections">{links}</p>' if links else "") + "</li>")
    return '<ol class="chapter-map">\n' + "\n".join(items) + "\n</ol>"


def _gallery(readme: str, linker: Linker, source: Path, page: str) -> str:
    """The images the README shows (the explorers' screenshots), with their alt text as captions."""
    figures = [f'<figure><img src="{html.escape(linker.url(url, source, page))}" alt="{html.escape(alt)}">'
               f"<figcaption>{html.escape(alt)}</figcaption></figure>"
               for alt, url in re.findall(r"!\[([^\]]*)\]\(([^)\s]+)\)", readme)]
    return '<div class="gallery">' + "\n".join(figures) + "</div>" if figures else ""


def _exercise_table(chapters: dict[int, Page], linker: Linker, source: Path, page: str) -> str:
    """Every graded exercise: its chapter, the file the learner edits, and the name check() takes."""
    from .grading import CHAPTERS, exercises

    rows = []
    for n, stem in sorted(CHAPTERS.items()):
        names = ", ".join(f"<code>{html.escape(e.name)}</code>" for e in exercises(n))
        chapter = chapters.get(n)
        title = f'<a href="{chapter.path}">{html.escape(chapter.short_title)}</a>' if chapter else f"{n:02d}"
        file = f"exercises/{stem}.py"
        link = linker.url(f"../{file}", source, page)
        rows.append(f'<tr><td>{title}</td><td><a href="{link}"><code>{file}</code></a></td><td>{names}</td>'
                    f"<td><code>minillama4 grade {n}</code></td></tr>")
    return ('<h2 id="every-graded-exercise">Every graded exercise</h2>\n<table class="exercises">'
            "<thead><tr><th>chapter</th><th>your file</th><th>exercises (<code>check(name)</code>)</th>"
            "<th>score</th></tr></thead>\n<tbody>" + "\n".join(rows) + "</tbody></table>")


def source_page(target: Path, page: Page, root: Path, linker: Linker) -> None:
    """A repository file as highlighted source, or a folder as a list of its files."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    rel = target.relative_to(root).as_posix()
    if target.is_dir():
        entries = []
        for child in sorted(target.iterdir()):
            if child.name in SKIP_NAMES or child.name.startswith(".") or child.suffix == ".egg-info":
                continue
            if child.is_dir() or _is_text(child):
                entries.append(f'<li><a href="{_relative(linker.source(child), page.path)}">'
                               f'<code>{html.escape(child.name)}{"/" if child.is_dir() else ""}</code></a></li>')
            else:
                entries.append(f"<li><code>{html.escape(child.name)}</code> (not text)</li>")
        page.body = f"<h1><code>{html.escape(rel)}/</code></h1>\n<ul class=\"listing\">\n" + "\n".join(entries) + "</ul>"
        return
    text = target.read_text(encoding="utf-8")
    try:
        lexer = get_lexer_for_filename(target.name, stripnl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False)
    code = highlight(text, lexer, HtmlFormatter(linenos="inline", cssclass="highlight source"))
    page.body = f"<h1><code>{html.escape(rel)}</code></h1>\n{code}"


# ------------------------------------------------------------------------------------------ the build
def _prepare_out(out: Path) -> None:
    """Create OUT/, or clear it if a previous build made it; refuse to write into any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise SiteError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SiteError(f"{out} is not empty and not a previous site build: choose a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("built by `minillama4 site build`; rebuilding clears this folder\n")


def build(out, root=None) -> list[Path]:
    """Build the site into `out` from the repository at `root` (default: the course checkout); return the pages
    written. Reads the notebooks as committed: nothing is executed."""
    import jinja2
    from markupsafe import Markup
    from pygments.formatters import HtmlFormatter

    try:
        import latex2mathml  # noqa: F401  (used by tex_to_mathml; fail early with the fix)
        import nbconvert  # noqa: F401
    except ImportError as e:
        raise SiteError(f"building the site needs {e.name}: pip install -e '.[dev]'") from None
    if root is None:
        from .grading import project_root

        root = project_root()
    root, out = Path(root).resolve(), Path(out).resolve()
    readme_path, notebooks = root / "README.md", sorted((root / "notebooks").glob("*.ipynb"))
    if not readme_path.is_file() or not notebooks:
        raise SiteError(f"{root} has no README.md or no notebooks/*.ipynb: is it the course repository?")
    if out == root or root.is_relative_to(out):
        raise SiteError(f"{out} would hold the repository itself: choose a folder for the site alone")

    numbered = [p for p in notebooks if re.match(r"\d+_", p.name)]
    ordered = numbered + [p for p in notebooks if p not in numbered]
    docs = sorted((root / "docs").glob("*.md"))
    pages_of = {p: f"{p.stem}.html" for p in ordered} | {p: f"{p.stem}.html" for p in docs}
    pages_of[readme_path] = "package.html"
    clash = {"index.html", "package.html", "style.css"} & {pages_of[p] for p in ordered + docs}
    if clash:
        raise SiteError(f"a notebook or doc would overwrite the site's own {', '.join(sorted(clash))}")
    linker = Linker(root, pages_of)

    import nbformat

    current = {}
    exporter = _cells_exporter(linker, current)
    chapters, pictures = [], {}
    for path in ordered:
        nb = nbformat.read(path, as_version=4)
        title = _notebook_title(nb, path.stem)
        page = Page(pages_of[path], title, "chapter", short_title=title.split(":")[0])
        pictures |= chapter_page(nb, path, page, exporter, current)
        chapters.append(page)

    readme = readme_path.read_text(encoding="utf-8")
    intro, rest = _sections(readme)
    home = Page("index.html", "the course", "home", short_title="Home")
    home.body = (markdown_to_html(intro, linker, readme_path, home.path, slug=github_slug)
                 + '<h2 id="chapters">Chapters</h2>\n' + _chapter_map(chapters)
                 + _gallery(readme, linker, readme_path, home.path))
    package = Page("package.html", "The package", "doc")
    package.body = markdown_to_html(rest or readme, linker, readme_path, package.path, slug=github_slug)
    numbers = {int(re.match(r"\d+", p.name).group()): page for p, page in zip(ordered, chapters) if p in numbered}
    extras = [home, package]
    for path in sorted(docs, key=lambda p: p.stem != "exercises"):  # the exercises first, after the package
        text = path.read_text(encoding="utf-8")
        m = re.search(r"^#\s+(.+)$", text, re.M)
        page = Page(pages_of[path], m.group(1).strip() if m else path.stem, "doc")
        page.body = markdown_to_html(text, linker, path, page.path, slug=github_slug)
        if path.stem == "exercises":
            page.body += _exercise_table(numbers, linker, path, page.path)
        extras.append(page)

    sources, done = [], set()
    while set(linker.sources) - done:  # a folder's page links its files and subfolders: show those too
        for target in sorted(set(linker.sources) - done):
            done.add(target)
            page = Page(linker.sources[target], target.relative_to(root).as_posix(), "source")
            source_page(target, page, root, linker)
            sources.append(page)

    _prepare_out(out)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(PAGE_TEMPLATE)
    written = []
    for page in extras + chapters + sources:
        k = chapters.index(page) if page.kind == "chapter" else None
        prev = chapters[k - 1] if k else None
        nxt = chapters[k + 1] if k is not None and k + 1 < len(chapters) else None
        dest = out / page.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(template.render(page=page, body=Markup(page.body), up="../" * page.path.count("/"),
                                        chapters=chapters, extras=extras, prev=prev, next=nxt), encoding="utf-8")
        written.append(dest)
    for target, name in linker.images.items():
        (out / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(target, out / name)
    for name, data in pictures.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    pygments_css = HtmlFormatter().get_style_defs(".highlight")
    (out / "style.css").write_text(SITE_CSS.read_text(encoding="utf-8") + "\n/* code colours (Pygments) */\n"
                                   + pygments_css + "\n", encoding="utf-8")
    return written

