"""Nothing the course runs overwrites a student's work: `make release` refuses over changes in notebooks/ (naming
them) unless forced, and `make demo` and nbgrader's own generate_assignment (the formgrader's Generate) release
elsewhere. Checked end to end on a copy of this repository, committed to a git repository of its own, whose
notebooks/ someone has edited."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograde import course

pytestmark = pytest.mark.slow
A = "01_mle_and_nll"
GIT = ["git", "-c", "user.name=course", "-c", "user.email=course@example.invalid", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def edited_copy(tmp_path_factory):
    """(a copy of the repository with notebooks/ edited, the edited notebook's bytes, the added file's path)."""
    root = tmp_path_factory.mktemp("course") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=course.ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (course.ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(course.ROOT / name, root / name)
    subprocess.run(GIT + ["init", "-q"], cwd=root, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=root, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "the course"], cwd=root, check=True)
    notebook = root / "notebooks" / A / f"{A}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("My notes: the gradient of BCE is p - y."))
    nbformat.write(nb, notebook)
    edited = notebook.read_bytes()
    added = notebook.with_name("my_scratch.py")
    added.write_text("x = 1\n")
    return root, edited, added


def _run(root, *args, cwd=None):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    return subprocess.run([sys.executable, *args], cwd=cwd or root, env=env, capture_output=True, text=True)


def _untouched(root, edited, added):
    assert (root / "notebooks" / A / f"{A}.ipynb").read_bytes() == edited
    assert added.read_text() == "x = 1\n"


def test_make_release_refuses_over_changes_and_names_them(edited_copy):
    root, edited, added = edited_copy
    done = _run(root, "-m", "autograde.release", A)
    assert done.returncode != 0
    assert f"notebooks/{A}/{A}.ipynb" in done.stderr and f"notebooks/{A}/my_scratch.py" in done.stderr
    assert "FORCE=1" in done.stderr
    _untouched(root, edited, added)


def test_nbgrader_and_the_formgrader_generate_into_build(edited_copy):
    root, edited, added = edited_copy
    done = _run(root, "-m", "nbgrader", "generate_assignment", A, "--force", cwd=root / "autograde")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "build" / "release" / A / f"{A}.ipynb").exists()
    _untouched(root, edited, added)


def test_make_demo_releases_into_build(edited_copy):
    root, edited, added = edited_copy
    done = _run(root, "-m", "autograde.demo", A)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^reference +12 / 12 *$", done.stdout, re.M), done.stdout[-3000:]
    assert (root / "build" / "demo" / "release" / A / f"{A}.ipynb").exists()
    _untouched(root, edited, added)


def test_forced_release_replaces_the_changes_with_the_release(edited_copy):
    root, edited, added = edited_copy
    done = _run(root, "-m", "autograde.release", "--force", A)
    assert done.returncode == 0, done.stdout + done.stderr
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "notebooks"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status  # exactly what was committed: the edit and the added file are gone
