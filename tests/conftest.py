"""Shared fixtures: run a solution notebook's solution cells (and the cells they need) in-process and replay its
graded test cells.

The mutant tests use this to prove each exercise's own test cell (visible and hidden tests
together, exactly as nbgrader runs them) rejects wrong implementations and accepts right ones.
"""
import ast
import contextlib
import linecache
import os
import re
import symtable
from dataclasses import dataclass
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


# The suite runs on every core (pytest-xdist, -n auto in pyproject.toml's addopts). A worker takes a group of tests at a
# time, and a group is a module, so that a module's fixtures are made once; the modules that read the session's graded
# class are one group, so that it is graded once. The longest groups come first: they start at once, on different
# workers.
GRADED_CLASS_MODULES = ("test_course.py", "test_slides.py")
LONGEST_FIRST = ("graded class", "test_batch.py", "test_mutants_10_gpu_lab_fused_cross_entropy.py")


def group_of(nodeid):
    module = nodeid.split("::")[0].rsplit("/", 1)[-1]
    return "graded class" if module in GRADED_CLASS_MODULES else module


def pytest_collection_modifyitems(items):
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: the rest in the order collected


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # xdist's scheduler by module, with group_of for the module
        def _split_scope(self, nodeid):
            return group_of(nodeid)
    return ByGroup(config, log)


def require_box():
    """Skip a test that grades in bubblewrap's box where this machine cannot make one; CI, which installs
    bubblewrap (.ci/run sets CI=1), fails instead of skipping."""
    from autograde import sandbox
    problem = sandbox.problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must grade in a box, but: {problem}")
    if problem:
        pytest.skip(f"no sandbox on this machine: {problem}")


def only_in_blocks(assignment, block, shortest=0):
    """Lines (stripped) that a solution notebook has only inside its `### BEGIN <block>` ... `### END <block>`
    regions (block: SOLUTION or HIDDEN TESTS), longer than `shortest` characters."""
    source = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    secret = rf"### BEGIN {block}\n(.*?)### END {block}"
    public = {line.strip() for c in source.cells for line in re.sub(secret, "", c.source, flags=re.S).splitlines()}
    inside = {line.strip() for c in source.cells for body in re.findall(secret, c.source, re.S)
              for line in body.splitlines()}
    return {line for line in inside - public if len(line) > shortest}


def nbgrader_meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _names(source):
    """(the module-level names the cell reads, at its top level or as globals of the functions and classes it
    defines, the names it binds at its top level), by Python's own scoping (symtable)."""
    top = symtable.symtable(source, "<cell>", "exec")
    reads, tables = {s.get_name() for s in top.get_symbols() if s.is_referenced()}, list(top.get_children())
    while tables:
        table = tables.pop()
        reads |= {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
        tables += table.get_children()
    binds = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    return reads, binds


def needed_cells(code):
    """Indices of the code cells the solution cells need: the first (the notebook's set-up), the solutions, and every
    cell that binds a name one of these reads, and so on. Test cells need nothing else (test_notebooks holds them to
    it), so the notebook's demonstrations (a model trained, a plot) are left out."""
    names = [_names(cell.source) for cell in code]
    keep = {i for i, cell in enumerate(code) if i == 0 or nbgrader_meta(cell).get("solution")}
    while True:
        read = set().union(*(names[i][0] for i in keep))
        more = {i for i, cell in enumerate(code) if i not in keep and not nbgrader_meta(cell).get("grade")
                and names[i][1] & read}
        if not more:
            return keep
        keep |= more


class NotebookExercises:
    """A solution notebook's solution cells, and the cells they need, executed once; ``run_test`` replays one test
    cell with replacements."""

    def __init__(self, path: Path):
        self.path = path
        self.notebook = nbformat.read(path, as_version=4)
        code = [c for c in self.notebook.cells if c.cell_type == "code"]
        self.tests = {nbgrader_meta(c)["grade_id"]: c.source for c in code if nbgrader_meta(c).get("grade")}
        self.namespace = {"__name__": "__main__"}
        with _cwd(path.parent), _isolated(NBGRADER_EXECUTION="autograde"):  # the demo cells see what nbgrader's show
            for index in sorted(needed_cells(code)):
                exec(_compiled(code[index].source, f"{path.name}[cell {index}]"), self.namespace)

    def run_test(self, test_id, **replacements):
        """Run one test cell; return the value its last line shows, as Jupyter would (None if it shows none)."""
        namespace = dict(self.namespace, **replacements)
        source, name = self.tests[test_id], f"{self.path.name}[{test_id}]"
        *body, last = ast.parse(source).body or [ast.Pass()]
        shown = isinstance(last, ast.Expr)
        with _cwd(self.path.parent), _isolated():
            exec(_compiled(source, name, ast.Module(body=body if shown else body + [last], type_ignores=[])),
                 namespace)
            return eval(_compiled(source, name, ast.Expression(last.value), "eval"), namespace) if shown else None


def _compiled(source, name, tree=None, mode="exec"):
    """The cell (or `tree`, a part of it) compiled under `name`, whose source linecache then knows, as Jupyter's does
    for its cells: tracebacks show the lines, and @triton.jit (which reads a kernel's source through inspect) finds
    them."""
    linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)  # mtime None: kept
    return compile(source if tree is None else tree, name, mode)


@contextlib.contextmanager
def _cwd(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _isolated(**environment):
    """What a notebook may change in the process it runs in (torch's threads and random state, the environment)
    is put back afterwards: nothing a notebook does reaches the tests that run after it."""
    threads, rng, saved = torch.get_num_threads(), torch.random.get_rng_state(), dict(os.environ)
    os.environ.update(environment)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)
        os.environ.clear()
        os.environ.update(saved)


_loaded = {}


def load_exercises(assignment: str) -> NotebookExercises:
    """The executed solution notebook of an assignment, cached for the whole test session."""
    if assignment not in _loaded:
        _loaded[assignment] = NotebookExercises(ROOT / "solutions" / assignment / f"{assignment}.ipynb")
    return _loaded[assignment]


@dataclass
class GradedClass:
    """The sample class of every assignment, graded: what `make demo` does, once per test session."""
    workspace: object   # autograde.course.Workspace: its release, gradebook, autograded/ and feedback/
    results: dict       # assignment -> {student: outcome summary}

    def autograded(self, student, assignment):
        """The student's notebook as the grader ran it, outputs and all."""
        return nbformat.read(self.workspace.dir("autograded") / student / assignment / f"{assignment}.ipynb",
                             as_version=4)

    def feedback(self, student, assignment, page=None):
        return (self.workspace.dir("feedback") / student / assignment / (page or f"{assignment}.html")).read_text()


# What a sample student proves is either the notebook's or the grader's. The notebook's, in every notebook: its solution
# gets full marks with no cell raising, its release zero with one message per test, and a first exercise that raises
# leaves the others their points (no test or demo cell leans on it unguarded). The grader's (a notebook that is not
# JSON, a kernel killed and replayed, a test cell deleted and restored, wrong answers scored without a crash) are the
# same in every notebook: WHOLE_CLASS hands in all seven students, and tests/test_batch.py holds the grader to ~40 more
# on it. Each exercise's test cell rejecting wrong answers without crashing is its mutant suite's (tests/mutants.py).
EVERY_NOTEBOOK = ("reference", "untouched", "raises")
WHOLE_CLASS = "01_mle_and_nll"


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    """Every assignment's sample students (autograde/sample_class.py; its `reference` student is the solution notebook:
    EVERY_NOTEBOOK, and all of them in WHOLE_CLASS) and notebook 10's adversary (tests/adversarial.py), graded
    by the batch grader on one pool of workers with the demo's limits, once per session: each notebook executes here,
    and every end-to-end check of the release, the grades, the feedback and the notebooks reads this."""
    require_box()
    import adversarial
    from autograde import batch, course, demo, sample_class
    root = tmp_path_factory.mktemp("class")
    workspace = course.Workspace(root=root / "course", release=root / "release")
    others = [a for a in course.assignments() if a != WHOLE_CLASS]
    classes = demo.hand_in([WHOLE_CLASS], workspace, root / "handed_in", sample_class.STUDENTS)
    classes |= demo.hand_in(others, workspace, root / "handed_in", EVERY_NOTEBOOK)
    lab = f"{adversarial.GPU_LAB}/{adversarial.GPU_LAB}.ipynb"
    extra = classes[adversarial.GPU_LAB] / "lab_adversary" / lab
    extra.parent.mkdir(parents=True)
    nbformat.write(adversarial.lab_adversary(workspace.release / lab, course.SOLUTIONS / lab), extra)
    graded = batch.grade(classes, workspace, workers=2, progress=False)
    return GradedClass(workspace, {assignment: results for assignment, (results, _) in graded.items()})


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
