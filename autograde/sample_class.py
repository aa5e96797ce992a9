"""A sample class for the demo and the end-to-end tests, built from solutions/ and the release.

Every assignment gets the same seven students:
  reference       the release with every solution filled in from solutions/     -> full marks
  untouched       the release as handed out                                      -> zero
  partly_wrong    every other exercise with its sign flipped, the last one blank -> partial
  broken_json     a notebook file cut off halfway (not valid JSON)               -> not graded, told why
  deleted_cells   a test cell and a solution cell deleted                        -> graded on the rest
  raises          the first solution cell raises before defining anything        -> graded on the rest
  kills_kernel    a solution cell ends the Python process (os._exit)             -> not graded, told why
"""
import re
from pathlib import Path

import nbformat

STUDENTS = ("reference", "untouched", "partly_wrong", "broken_json", "deleted_cells", "raises", "kills_kernel")
MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$\n?", re.MULTILINE)


def _nbgrader(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _solution_sources(source_notebook):
    """grade_id -> the solution cell's code, without nbgrader's markers."""
    nb = nbformat.read(source_notebook, as_version=4)
    return {_nbgrader(c)["grade_id"]: MARKERS.sub("", c.source) for c in _solution_cells(nb)}


def _solution_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and _nbgrader(c).get("solution")]


def filled_in(release_notebook, source_notebook):
    """The release notebook as a student who solved everything would hand it in."""
    nb = nbformat.read(release_notebook, as_version=4)
    answers = _solution_sources(source_notebook)
    for cell in _solution_cells(nb):
        cell.source = answers[_nbgrader(cell)["grade_id"]]
    return nb


def partly_wrong(release_notebook, source_notebook):
    """Solved, but every second exercise returns the negated result and the last is left blank."""
    nb = filled_in(release_notebook, source_notebook)
    cells = _solution_cells(nb)
    for cell in cells[1::2]:
        cell.source = re.sub(r"^(\s*)return (.+)$", r"\1return -(\2)", cell.source, flags=re.MULTILINE)
    cells[-1].source = _solution_cells(nbformat.read(release_notebook, as_version=4))[-1].source
    return nb


def deleted_cells(release_notebook, source_notebook):
    nb = filled_in(release_notebook, source_notebook)
    tests = [c for c in nb.cells if _nbgrader(c).get("grade")]
    doomed = {id(_solution_cells(nb)[0]), id(tests[-1])}
    nb.cells = [c for c in nb.cells if id(c) not in doomed]
    return nb


def raises(release_notebook, source_notebook):
    nb = filled_in(release_notebook, source_notebook)
    first = _solution_cells(nb)[0]
    first.source = "raise RuntimeError('a bug in my first solution cell')\n" + first.source
    return nb


def kills_kernel(release_notebook, source_notebook):
    nb = filled_in(release_notebook, source_notebook)
    _solution_cells(nb)[-1].source = "import os\nos._exit(1)\n" + _solution_cells(nb)[-1].source
    return nb


def write_class(assignment, source_notebook, release_notebook, folder):
    """Hand in each sample student's notebook in nbgrader's submitted layout, folder/<student>/<assignment>/;
    returns {student: the notebook's path}."""
    builders = {"reference": filled_in, "partly_wrong": partly_wrong,
                "deleted_cells": deleted_cells, "raises": raises, "kills_kernel": kills_kernel}
    paths = {student: Path(folder) / student / assignment / f"{assignment}.ipynb" for student in STUDENTS}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    for student, build in builders.items():
        nbformat.write(build(release_notebook, source_notebook), paths[student])
    paths["untouched"].write_bytes(Path(release_notebook).read_bytes())
    text = Path(release_notebook).read_text(encoding="utf-8")
    paths["broken_json"].write_text(text[: len(text) // 2], encoding="utf-8")
    return paths
