"""A sample class for the demo and the end-to-end tests, built from solutions/ and the release.

In `make demo` every assignment gets the same seven students (the tests hand in some of them: tests/conftest.py):
  reference       the release with every solution filled in from solutions/     -> full marks
  untouched       the release as handed out                                      -> zero
  partly_wrong    every other exercise with its sign flipped, the last one blank -> partial
  broken_json     a notebook file cut off halfway (not valid JSON)               -> not graded, told why
  deleted_cells   a test cell and a solution cell deleted                        -> graded on the rest
  raises          the first solution cell raises before defining anything        -> graded on the rest
  kills_kernel    the first solution cell ends the Python process (os._exit)  -> graded on the rest, told why
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
    # the first solution cell, not a later one: the grader restarts the kernel and replays every cell that ran before
    # the one that killed it, which in the notebooks that train a model would be most of the notebook run twice
    nb = filled_in(release_notebook, source_notebook)
    _solution_cells(nb)[0].source = "import os\nos._exit(1)\n" + _solution_cells(nb)[0].source
    return nb


def untouched(release_notebook, source_notebook):
    return Path(release_notebook).read_bytes()


def broken_json(release_notebook, source_notebook):
    text = Path(release_notebook).read_text(encoding="utf-8")
    return text[: len(text) // 2].encode("utf-8")


# each makes the student's notebook (or bytes that are meant not to be one)
BUILDERS = {"reference": filled_in, "untouched": untouched, "partly_wrong": partly_wrong, "broken_json": broken_json,
            "deleted_cells": deleted_cells, "raises": raises, "kills_kernel": kills_kernel}


def write_class(assignment, source_notebook, release_notebook, folder, students=STUDENTS):
    """Hand in each sample student's notebook (`students`, a part of STUDENTS) in nbgrader's submitted layout,
    folder/<student>/<assignment>/; returns {student: the notebook's path}."""
    paths = {}
    for student in students:
        made = BUILDERS[student](release_notebook, source_notebook)
        paths[student] = Path(folder) / student / assignment / f"{assignment}.ipynb"
        paths[student].parent.mkdir(parents=True, exist_ok=True)
        paths[student].write_bytes(made if isinstance(made, bytes) else nbformat.writes(made).encode("utf-8"))
    return paths
