"""The class's slides (autograde/slides.py): the release and nothing more, the answers without the hidden
tests, and nothing fetched when they open."""
import functools
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from autograde import slides
from autograde.course import RELEASE, assignments
from conftest import only_in_blocks


# --- formulas: MathML at build time ---------------------------------------------------------------------------------

def _page(markdown):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown)])
    return slides.PageExporter().from_notebook_node(nb)[0]


def test_inline_and_display_formulas_become_mathml_and_code_keeps_its_dollars():
    page = _page("A $\\log p$ and `echo $HOME` and\n\n$$\\sum_k e^{x_k}$$\n\n```\ncost = $5 and $6\n```")
    assert page.count("<math") == 2 and 'display="block"' in page and 'display="inline"' in page
    assert "echo $HOME" in page and "cost = $5 and $6" in page
    assert "MATHPLACEHOLDER" not in page and "$\\log" not in page


def test_an_inline_formula_may_run_over_a_line_break_but_not_over_a_paragraph():
    page = _page("one $a =\nb$ two\n\ncosts $5\n\nand $6")
    assert page.count("<math") == 1 and "costs $5" in page and "and $6" in page


def test_a_formula_in_a_heading_is_mathml_in_the_text_and_latex_in_its_anchor():
    page = _page("## The gradient: $\\sigma(z) - y$")
    anchors = re.findall(r'(?:id|href)="([^"]*)"', page)
    assert any("sigma" in a for a in anchors), anchors
    assert not any("<" in a for a in anchors), f"markup inside an attribute: {anchors}"
    assert re.search(r"<h2[^>]*>The gradient: <math", page), page


def test_a_formula_that_cannot_be_rendered_is_named_not_printed_as_its_latex():
    with pytest.raises(ValueError, match=r"\$x\^\$"):
        _page("broken: $x^$")
    with pytest.raises(ValueError, match=r"uses \\foo, which latex2mathml does not know"):
        _page("unknown: $\\foo x$")


def test_the_commands_latex2mathml_lacks_are_drawn():
    page = _page("$\\arg\\max_k p_k$ and $\\lfloor x \\rfloor$")
    assert "\\arg" not in page and "\u230a" in page and "\u230b" in page


# --- every notebook, both renders -----------------------------------------------------------------------------------

class _Document(HTMLParser):
    """What a reader sees (text outside scripts and styles), the text outside code and formulas (where a `$`
    would be unrendered LaTeX), and every address the page would load."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.text, self.prose, self.loads, self._open = [], [], [], []
        self.feed(page)
        self.lines = {line.strip() for line in "".join(self.text).splitlines() if line.strip()}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag):]

    def handle_data(self, data):
        if "script" in self._open or "style" in self._open:
            self.loads += _css_urls(data) if "style" in self._open else []
            return
        self.text.append(data)
        if not {"code", "pre", "math"} & set(self._open):
            self.prose.append(data)


def _css_urls(css):
    """The addresses a style sheet loads: url(...) and @import "..."."""
    return re.findall(r"url\(\s*['\"]?([^'\")]+)", css) + re.findall(r"@import\s+['\"]([^'\"]+)", css)


def _not_beside(folder, addresses):
    """The addresses, and those of the style sheets they load in turn, that are not files under `folder`."""
    missing, todo = [], [(Path(folder), a) for a in addresses]
    while todo:
        base, address = todo.pop()
        if address.startswith("data:"):
            continue
        target = base / address.split("?")[0].split("#")[0]
        if not target.is_file():
            missing.append(address)
        elif target.suffix == ".css":
            todo += [(target.parent, a) for a in _css_urls(target.read_text(encoding="utf-8"))]
    return missing


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, graded_class):
    """assignment -> {(edition, kind): _Document and its page}, rendered once per assignment from the solution
    notebook as the session's grading executed it (the `reference` student)."""
    out = tmp_path_factory.mktemp("slides")

    @functools.cache
    def render(assignment):
        release = nbformat.read(RELEASE / assignment / f"{assignment}.ipynb", as_version=4)
        paths = slides.write(assignment, graded_class.autograded("reference", assignment), release, out / "class", out / "answers")
        return {(path.parent.name, "deck" if path.name.endswith(".slides.html") else "page"): path for path in paths}
    return render


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignments())
def test_the_class_sees_no_solution_code_and_no_hidden_test(assignment, rendered):
    solution_lines = only_in_blocks(assignment, "SOLUTION")
    hidden_lines = only_in_blocks(assignment, "HIDDEN TESTS")
    assert solution_lines and hidden_lines, "the leak check needs lines that only the solutions have"
    for (edition, kind), path in rendered(assignment).items():
        seen = _Document(path.read_text(encoding="utf-8")).lines
        hidden = sorted(hidden_lines & seen)
        assert not hidden, f"{edition} {kind} shows hidden-test lines: {hidden[:5]}"
        assert not any("### BEGIN" in line for line in seen), f"{edition} {kind} shows nbgrader's markers"
        if edition == "class":
            leaked = sorted(solution_lines & seen)
            assert not leaked, f"the class's {kind} shows solution code: {leaked[:5]}"
        else:
            missing = sorted(solution_lines - seen)
            assert not missing, f"the answers' {kind} lacks solution lines: {missing[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignments())
def test_the_class_sees_what_the_solutions_produce_outside_the_exercises(assignment, rendered, graded_class):
    executed = graded_class.autograded("reference", assignment)
    demo_outputs = [line.strip() for cell in executed.cells if cell.cell_type == "code"
                    and not cell.metadata.get("nbgrader") for out in cell.outputs if out.get("name") == "stdout"
                    for line in out.text.splitlines() if line.strip()]
    assert demo_outputs, "the notebook's demos print nothing to compare"
    seen = _Document(rendered(assignment)["class", "page"].read_text(encoding="utf-8")).lines
    missing = sorted(set(demo_outputs) - seen)
    assert not missing, f"demo outputs missing from the class's page: {missing[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignments())
def test_the_slides_open_offline_with_their_formulas_rendered(assignment, rendered):
    for (edition, kind), path in rendered(assignment).items():
        page = path.read_text(encoding="utf-8")
        document = _Document(page)
        missing = _not_beside(path.parent, document.loads)
        assert not missing, f"{edition} {kind} loads what is not beside it: {missing}"
        assert "mathjax" not in page.lower() and "require.js" not in page
        dollars = [t.strip() for t in document.prose if "$" in t]
        assert not dollars, f"{edition} {kind} shows unrendered LaTeX: {dollars[:3]}"
        assert "<math" in page and "<merror" not in page and "MATHPLACEHOLDER" not in page
        if kind == "deck":
            assert any(a.endswith("reveal.js/dist/reveal.js") for a in document.loads) and "Reveal.initialize" in page


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignments())
def test_a_slide_per_section_and_one_below_it_per_subsection(assignment, rendered):
    release = nbformat.read(RELEASE / assignment / f"{assignment}.ipynb", as_version=4)
    firsts = [c.source.lstrip().split("\n", 1)[0] for c in release.cells if c.cell_type == "markdown"]
    sections = sum(bool(re.match(r"##? ", line)) for line in firsts)
    subsections = sum(line.startswith("### ") for line in firsts)
    deck = rendered(assignment)["class", "deck"].read_text(encoding="utf-8")
    # nbconvert: a slide is <section><section>...</section></section>, a slide below it one more <section>
    assert release.cells[0].source.startswith("# ") and sections > 1
    assert deck.count("<section") == 2 * sections + subsections
