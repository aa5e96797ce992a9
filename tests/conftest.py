"""Shared fixtures: run a solution notebook's cells in-process and replay its graded test cells.

The mutant tests use this to prove each exercise's own test cell (visible and hidden tests
together, exactly as nbgrader runs them) rejects wrong implementations and accepts right ones.
"""
import contextlib
import functools
import linecache
import os
from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch

# Triton kernels run on CPU tensors through Triton's interpreter, which must be chosen before any
# kernel is defined (at import time); a machine with a GPU runs them compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


def require_box():
    """Skip a test that grades in bubblewrap's box where this machine cannot make one; CI, which installs
    bubblewrap (.ci/run sets CI=1), fails instead of skipping."""
    from autograde import sandbox
    problem = sandbox.problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must grade in a box, but: {problem}")
    if problem:
        pytest.skip(f"no sandbox on this machine: {problem}")


def nbgrader_meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


class NotebookExercises:
    """A solution notebook executed once; ``run_test`` replays one test cell with replacements."""

    def __init__(self, path: Path):
        self.path = path
        self.notebook = nbformat.read(path, as_version=4)
        code = [c for c in self.notebook.cells if c.cell_type == "code"]
        self.tests = {nbgrader_meta(c)["grade_id"]: c.source for c in code if nbgrader_meta(c).get("grade")}
        self.namespace = {"__name__": "__main__"}
        with _cwd(path.parent):
            for index, cell in enumerate(code):
                if not nbgrader_meta(cell).get("grade"):
                    exec(_compiled(cell.source, f"{path.name}[cell {index}]"), self.namespace)

    def run_test(self, test_id, **replacements):
        namespace = dict(self.namespace, **replacements)
        with _cwd(self.path.parent):
            exec(_compiled(self.tests[test_id], f"{self.path.name}[{test_id}]"), namespace)


def _compiled(source, name):
    """The cell compiled under `name`, whose source linecache then knows, as Jupyter's does for its cells:
    tracebacks show the lines, and @triton.jit (which reads a kernel's source through inspect) finds them."""
    linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)  # mtime None: kept
    return compile(source, name, "exec")


@contextlib.contextmanager
def _cwd(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


_loaded = {}


def load_exercises(assignment: str) -> NotebookExercises:
    """The executed solution notebook of an assignment, cached for the whole test session."""
    if assignment not in _loaded:
        _loaded[assignment] = NotebookExercises(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    return _loaded[assignment]


@pytest.fixture(scope="session")
def executed_solution():
    """assignment -> (its solution notebook executed top to bottom in a kernel, seconds): once per session,
    on first use, shared by every test that needs it (callers copy before they change it)."""
    from autograde.pipeline import execute_solution
    return functools.cache(execute_solution)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
