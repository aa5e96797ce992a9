"""The student's edition (`make handout`): installed into a fresh virtual environment, it holds no answer key and
every course_lib name a release notebook imports; every release notebook, untouched, runs every cell but the tests,
which each say what to write; notebook 01, solved, passes its visible tests there.

Every release notebook solved, cell by cell, in a kernel that holds only the student's edition of course_lib is the
session's graded class (tests/conftest.py `graded_class`: its `reference` student scores full marks in a box that
binds only edition.STUDENT's modules); here the same edition is the installed handout, not a view of this repository.

The fresh environment is made offline: a new venv whose one extra path is this environment's site-packages
(the notebooks' dependencies, already installed), without this environment's editable install of the
instructor's course_lib; the handout is then installed into it by pip, as its README says, from its own folder.
"""
import ast
import json
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograde import handout, course, sample_class
from course_lib import edition

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
REFERENCES = sorted(p.stem for p in (ROOT / "course_lib").glob("*.py")
                    if p.stem != "__init__" and p.stem not in edition.STUDENT)

# Runs inside the fresh environment: executes notebooks and reports, per code cell, its kind and any error.
RUNNER = textwrap.dedent('''
    import json, sys
    import nbformat
    from nbclient import NotebookClient
    report = {}
    for path, folder in json.loads(sys.argv[1]):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": folder}}).execute()
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "code":
                meta = cell.metadata.get("nbgrader", {})
                errors = [o for o in cell.outputs if o.output_type == "error"]
                cells.append({"id": meta.get("grade_id", ""), "test": bool(meta.get("grade")),
                              "error": errors[0]["traceback"] if errors else None, "source": cell.source[:200]})
        report[path] = cells
    print(json.dumps(report))
''')


@pytest.fixture(scope="module")
def student_env(tmp_path_factory):
    """(python of a fresh venv with the handout installed, the handout folder)."""
    root = tmp_path_factory.mktemp("handout")
    built = handout.build(root / "handout")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = sysconfig.get_path("purelib")  # this environment's packages first, then the system's it sees
    packages = [here] + [p for p in sys.path if p.endswith("-packages") and p != here]
    (Path(site) / "course-dependencies.pth").write_text("\n".join(packages) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                              "--no-build-isolation", "-c", "constraints.txt", "."],
                             cwd=built, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    return python, built


def _in_env(python, code, *args):
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_handout_holds_the_students_modules_and_no_reference(student_env):
    python, built = student_env
    probe = textwrap.dedent('''
        import importlib, json, sys
        import course_lib
        found = {}
        for name in sys.argv[1].split(","):
            try:
                found[name] = importlib.import_module("course_lib." + name).__file__
            except ModuleNotFoundError:
                found[name] = None
        print(json.dumps({"package": course_lib.__file__, "modules": found}))
    ''')
    seen = json.loads(_in_env(python, probe, ",".join(edition.STUDENT + tuple(REFERENCES))))
    installed = Path(seen["package"]).parent
    assert installed.is_relative_to(python.parent.parent), f"course_lib came from {installed}, not the handout"
    assert {n for n, f in seen["modules"].items() if f} == set(edition.STUDENT)
    assert REFERENCES and all(seen["modules"][name] is None for name in REFERENCES)
    solutions = [nbformat.read(course.SOLUTIONS / a / f"{a}.ipynb", as_version=4) for a in course.assignments()]
    graded = {sample_class._nbgrader(c)["grade_id"] for nb in solutions for c in sample_class._solution_cells(nb)}
    for folder in (installed, built / "course_lib"):
        text = "\n".join(p.read_text() for p in sorted(folder.glob("*.py")))
        defined = set(re.findall(r"^\s*def (\w+)\(", text, flags=re.MULTILINE))
        assert not defined & graded, f"{folder} defines graded functions: {sorted(defined & graded)}"
        for name in REFERENCES:
            assert not re.search(rf"(from \.|from course_lib|import course_lib\.){name}\b", text), name
    assert not list(built.rglob("*.py")) or all(p.parent.name == "course_lib" for p in built.rglob("*.py"))
    notebooks = "\n".join(p.read_text() for p in built.rglob("*.ipynb"))
    assert "BEGIN SOLUTION" not in notebooks and "BEGIN HIDDEN TESTS" not in notebooks
    for name in REFERENCES:
        assert not re.search(rf"course_lib\.{name}\b|from course_lib import [^\n]*\b{name}\b", notebooks), name


SOLVED = course.assignments()[0]  # the solved notebook run here: the first, and the quickest


def _course_lib_imports(notebook):
    """Every `import course_lib...` and `from course_lib... import ...` in the notebook's code cells, as source."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            if any(module.split(".")[0] == "course_lib" for module in modules):
                found.append(ast.unparse(node))
    return found


def test_every_course_lib_import_of_every_release_notebook_resolves_in_the_handout(student_env):
    python, built = student_env
    found = {a: _course_lib_imports(nbformat.read(built / "notebooks" / a / f"{a}.ipynb", 4))
             for a in course.assignments()}
    assert all(found.values()), f"notebooks without a course_lib import (every test cell has one): {found}"
    imports = sorted({line for lines in found.values() for line in lines})
    probe = textwrap.dedent('''
        import json, sys
        failed = {}
        for line in json.loads(sys.argv[1]):
            try:
                exec(line, {})
            except Exception as error:
                failed[line] = f"{type(error).__name__}: {error}"
        print(json.dumps(failed))
    ''')
    failed = json.loads(_in_env(python, probe, json.dumps(imports)))
    assert not failed, failed


@pytest.fixture(scope="module")
def executed(student_env, tmp_path_factory):
    """Every release notebook untouched, and notebook 01 with its solutions filled in, executed in the student's
    environment: {(assignment, "untouched" or "filled"): each code cell's grade id, kind and error}."""
    python, built = student_env
    work = tmp_path_factory.mktemp("runs")
    jobs = []
    for assignment in course.assignments():
        release = built / "notebooks" / assignment / f"{assignment}.ipynb"
        runs = [("untouched", nbformat.read(release, as_version=4))]
        if assignment == SOLVED:
            solution = course.SOLUTIONS / assignment / f"{assignment}.ipynb"
            runs.append(("filled", sample_class.filled_in(release, solution)))
        for kind, nb in runs:
            path = work / f"{assignment}-{kind}.ipynb"
            nbformat.write(nb, path)
            jobs.append((assignment, kind, str(path), str(release.parent)))
    halves = [jobs[0::2], jobs[1::2]]  # two runners at once: the machine's two cores
    runs = [subprocess.Popen([str(python), "-c", RUNNER, json.dumps([(p, f) for _, _, p, f in half])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work) for half in halves]
    reports = {}
    for run in runs:
        out, err = run.communicate(timeout=3000)
        assert run.returncode == 0, err[-3000:]
        reports.update(json.loads(out))
    return {(a, k): reports[p] for a, k, p, _ in jobs}


def test_the_solved_release_passes_its_visible_tests_in_the_students_environment(executed):
    cells = executed[SOLVED, "filled"]
    failed = [(c["id"] or c["source"][:60], c["error"][-1][:300]) for c in cells if c["error"]]
    assert not failed, failed
    assert sum(c["test"] for c in cells) >= 3, "the solved notebook ran too few test cells to prove anything"


@pytest.mark.parametrize("assignment", course.assignments())
def test_untouched_release_runs_every_cell_but_the_tests_which_each_say_what_to_write(executed, assignment):
    cells = executed[assignment, "untouched"]
    broken = [(c["source"][:60], c["error"][-1][:300]) for c in cells if c["error"] and not c["test"]]
    assert not broken, broken
    for cell in (c for c in cells if c["test"]):
        assert cell["error"] and len(cell["error"]) == 1 and "is not written yet" in cell["error"][0], cell
