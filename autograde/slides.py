"""`make slides`: what a class is shown, and the answers, for after the deadline.

    build/slides/<assignment>.slides.html    reveal.js: a slide per `#`/`##` section, a slide below it per `###`
    build/slides/<assignment>.html           the same notebook as one page
    build/answers/...                        the same two, with the solutions filled in

Every cell's source is the release's (no solution code, no hidden tests); the outputs are those of the
solutions executed top to bottom, kept for the cells that are neither an exercise nor its test, so plots and
demos show what a correct solution gives. The answers take each solution cell's code from solutions/ (its
markers dropped) and keep its outputs; test cells stay as released, without outputs (hidden tests may print).
Nothing is fetched when a page opens: formulas are MathML, converted here (latex2mathml), and each folder
has the reveal.js its decks load beside them.

    python -m autograde.slides [ASSIGNMENT ...]      (default: every assignment)
"""
import copy
import html
import re
import shutil
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import nbformat
from jinja2 import pass_context
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert import HTMLExporter, SlidesExporter

from autograde import course

TEMPLATES = course.HERE / "templates"
CLASS, ANSWERS = course.ROOT / "build" / "slides", course.ROOT / "build" / "answers"
REVEAL = "reveal.js"  # the folder beside the decks
# reveal.js 4.0.2 as the pyRevealjs wheel carries it: the script, its styles, the white theme and its font
REVEAL_FILES = ["dist/reveal.js", "dist/reveal.css", "dist/theme/white.css", "dist/theme/fonts/source-sans-pro"]
SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
# Markdown's code is left alone, as Jupyter does: fenced blocks, then spans of one or more backticks
CODE = re.compile(r"^```.*?^```|(`+)(?!`).*?(?<!`)\1(?!`)", re.M | re.S)
# $$display$$, and $inline$, which may run over a line break but not a paragraph
MATH = re.compile(r"\$\$(.+?)\$\$|\$((?:[^$\n]|\n(?![ \t]*\n))+?)\$", re.S)
PLACEHOLDER = re.compile(r"MATHPLACEHOLDER\d+X")
# commands the course uses that latex2mathml does not know (it would print them as text), and what draws them
SUBSTITUTES = {"arg": r"\mathrm{arg}\,", "lfloor": "\u230a", "rfloor": "\u230b"}
UNKNOWN = re.compile(r">(\\[A-Za-z]+)<")


def _roles(cell):
    meta = cell.metadata.get("nbgrader", {})
    return meta.get("solution", False), meta.get("grade", False)


def _ran(executed, release):
    """The executed solutions' cells, which must be the release's cell by cell."""
    if [c.get("id") for c in executed.cells] != [c.get("id") for c in release.cells]:
        raise ValueError("the release does not match the solutions cell by cell: run `make release`")
    return executed.cells


def for_class(executed, release):
    """The release, with the outputs of the executed solutions in every cell that is not an exercise or a test."""
    nb = copy.deepcopy(release)
    for cell, ran in zip(nb.cells, _ran(executed, release)):
        if cell.cell_type == "code" and not any(_roles(cell)):
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    return _sectioned(nb)


def answers(executed, release):
    """The release with each solution cell's code and outputs from the solutions, the solution markers dropped."""
    nb = copy.deepcopy(release)
    for cell, ran in zip(nb.cells, _ran(executed, release)):
        solution, test = _roles(cell)
        if solution:
            cell.source = "\n".join(line for line in ran.source.splitlines() if not SOLUTION_MARKER.match(line))
        if cell.cell_type == "code" and not test:
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    return _sectioned(nb)


def _sectioned(nb):
    """A slide starts at each `#`/`##` heading and a slide below it at each `###`; other cells continue it."""
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0] if cell.cell_type == "markdown" else ""
        kind = "slide" if re.match(r"##? ", first) else "subslide" if first.startswith("### ") else "-"
        cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


def protect_math(markdown):
    """(markdown with each formula replaced by a placeholder, {placeholder: (its LaTeX for an anchor, its MathML)});
    code is left alone."""
    formulas, pieces, start = {}, [], 0

    def convert(match):
        latex, display = (match[1], True) if match[1] is not None else (match[2], False)
        token = f"MATHPLACEHOLDER{len(formulas)}X"
        known = re.sub(r"\\(%s)(?![A-Za-z])" % "|".join(SUBSTITUTES), lambda m: SUBSTITUTES[m[1]], latex.strip())
        try:
            mathml = latex_to_mathml(known, display="block" if display else "inline")
        except Exception as error:
            raise ValueError(f"cannot render the formula ${latex}$ as MathML: {error!r}") from error
        if unknown := UNKNOWN.search(mathml):
            raise ValueError(f"the formula ${latex}$ uses {unknown[1]}, which latex2mathml does not know: "
                             f"add what draws it to autograde/slides.py's SUBSTITUTES")
        formulas[token] = html.escape(re.sub(r"\s+", "-", latex.strip())), mathml
        return token

    for code in CODE.finditer(markdown):
        pieces += [MATH.sub(convert, markdown[start:code.start()]), code[0]]
        start = code.end()
    pieces.append(MATH.sub(convert, markdown[start:]))
    return "".join(pieces), formulas


class _MathAtBuildTime:
    """Markdown is rendered with its formulas already MathML, which every current browser draws itself."""

    @pass_context
    def markdown2html(self, context, source):
        text, formulas = protect_math(source)
        page = super().markdown2html(context, text)
        # a heading's anchor (id, href) is made from its text: there the formula stays its LaTeX, as in Jupyter
        page = re.sub(r"<[^>]*>", lambda tag: PLACEHOLDER.sub(lambda m: formulas[m[0]][0], tag[0]), page)
        return PLACEHOLDER.sub(lambda m: formulas[m[0]][1], page)


class PageExporter(_MathAtBuildTime, HTMLExporter):
    def __init__(self, **kw):
        super().__init__(extra_template_basedirs=[str(TEMPLATES)], template_name="course_page", **kw)


class DeckExporter(_MathAtBuildTime, SlidesExporter):
    def __init__(self, **kw):
        # white: the theme whose font is in reveal.js's folder (nbconvert's default, simple, fetches Google's)
        super().__init__(extra_template_basedirs=[str(TEMPLATES)], template_name="course_deck",
                         reveal_url_prefix=REVEAL, reveal_theme="white", **kw)


def _copy_reveal(folder):
    source = Path(find_spec("pyRevealjs").submodule_search_locations[0]) / "assets" / "revealjsdist4.1.0"
    for name in REVEAL_FILES:
        target = folder / REVEAL / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (source / name).is_dir() else shutil.copy)(source / name, target)


def write(assignment, executed, release, class_folder=CLASS, answers_folder=ANSWERS):
    """Both renders of one assignment (page and deck each); returns the paths written."""
    written = []
    for folder, build in ((Path(class_folder), for_class), (Path(answers_folder), answers)):
        if not (folder / REVEAL).exists():
            _copy_reveal(folder)
        nb = build(executed, release)
        for exporter, suffix in ((PageExporter(), ".html"), (DeckExporter(), ".slides.html")):
            body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": assignment}})
            path = folder / f"{assignment}{suffix}"
            path.write_text(body, encoding="utf-8")
            written.append(path)
    return written


def main(names=None):
    names = names or course.assignments()
    for folder in (CLASS, ANSWERS):
        shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="slides-") as scratch:
        workspace = course.Workspace(root=Path(scratch), release=Path(scratch) / "release")
        for assignment in names:
            print(f"== {assignment}: executing the solutions, releasing, rendering", flush=True)
            executed, _ = course.execute_solution(assignment)
            course.release(assignment, workspace)
            release = nbformat.read(workspace.release / assignment / f"{assignment}.ipynb", as_version=4)
            write(assignment, executed, release)
    print(f"Class:   {CLASS.relative_to(course.ROOT)}/<assignment>.slides.html and <assignment>.html"
          f"\nAnswers: {ANSWERS.relative_to(course.ROOT)}/ (the same, with the solutions)")


if __name__ == "__main__":
    main(sys.argv[1:])
