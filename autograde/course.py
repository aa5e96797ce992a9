"""The course's folders and the nbgrader steps every command shares: the assignments, the workspace
a class is graded in, a solution executed, a release, the grades exported, and the words a student
reads when something kept their submission from being graded.

Grading itself is autograde/batch.py (and autograde/job.py for one student); the plain nbgrader
commands, for an instructor who wants them, are in the README.
"""
import functools
import html
import itertools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOLUTIONS, RELEASE = ROOT / "solutions", ROOT / "notebooks"
# where nbgrader releases (nbgrader_config.py); notebooks/ is written by autograde.release alone
BUILD_RELEASE = ROOT / "build" / "release"
# nbgrader creates a gradebook by running the `alembic` script, found on PATH; it lives beside this Python, whose
# bin/ may not be on PATH (a venv's python called directly, as `make test` does). Set once, here, for this process
# and every process it starts: nbgrader's commands, batch workers, their kernels.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


# a Triton exercise foo has a second test cell, test_foo_compiles: its kernel as Triton's compiler sees it (notebook 10)
COMPILED = "_compiles"


def exercise_of(test_id):
    """The exercise a test cell grades: test_softmax -> softmax, test_softmax_compiles -> softmax."""
    return test_id.removeprefix("test_").removesuffix(COMPILED)


def assignments():
    """Assignment ids, in course order: every solutions/NN_name/ folder."""
    return sorted(p.name for p in SOLUTIONS.glob("[0-9][0-9]_*") if p.is_dir())


@dataclass
class Workspace:
    """Where grading writes: submitted/, autograded/, feedback/ and the gradebook (default: autograde/), and where
    nbgrader releases (default: build/release/; `make release` alone writes notebooks/, never over changes)."""
    root: Path = HERE
    release: Path = BUILD_RELEASE

    @property
    def db_url(self):
        return f"sqlite:///{self.root / 'gradebook.db'}"

    def dir(self, step):
        return self.root / step

    def directories(self):
        """nbgrader's CourseDirectory settings that point it at this workspace."""
        steps = {f"{step}_directory": str(self.dir(step)) for step in ("submitted", "autograded", "feedback")}
        return dict(steps, release_directory=str(self.release), db_url=self.db_url)

    def config(self):
        """The course's nbgrader config, pointed at this workspace."""
        return nbgrader_config(CourseDirectory=self.directories())

    def nbgrader(self, *args):
        """Run one nbgrader command with the course config, pointed at this workspace."""
        self.root.mkdir(parents=True, exist_ok=True)
        overrides = [f"--CourseDirectory.{key}={value}" for key, value in self.directories().items()]
        return subprocess.run([sys.executable, "-m", "nbgrader", *args, *overrides],
                              cwd=HERE, capture_output=True, text=True)


def nbgrader_config(**sections):
    """The course's nbgrader_config.py (this folder), with `sections` ({"CourseDirectory": {...}, ...}) over it."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=str(HERE)).load_config()
    config.merge(Config(sections))
    return config


def execute_solution(assignment, timeout=600):
    """Run a solution notebook top to bottom in a fresh kernel; returns (executed notebook, seconds)."""
    source = SOLUTIONS / assignment / f"{assignment}.ipynb"
    nb = nbformat.read(source, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    return nb, time.perf_counter() - start


@functools.cache
def new_gradebooks_in_process():
    """Call before this process may create a gradebook. nbgrader stamps a new one with the schema's alembic revision,
    which it asks `alembic heads` for: a fresh Python that imports nbgrader, seconds for each new gradebook. The same
    revision is read here from the same migration scripts, in this process (milliseconds)."""
    import nbgrader.api
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR
    head = ScriptDirectory(ALEMBIC_DIR).get_current_head()
    nbgrader.api.get_alembic_version = lambda: head


def release(assignment, workspace=Workspace()):
    """nbgrader's generate_assignment, in this process: solutions/ -> the release folder, and the assignment into
    the gradebook."""
    from nbgrader.apps import NbGraderAPI
    new_gradebooks_in_process()
    workspace.root.mkdir(parents=True, exist_ok=True)
    done = NbGraderAPI(config=workspace.config()).generate_assignment(assignment, force=True)
    if not done["success"]:
        raise RuntimeError(f"nbgrader could not release {assignment}:\n{_tail(done.get('error') or done['log'])}")


def write_problem_feedback(workspace, student, assignment, problems):
    """feedback/<student>/<assignment>/problems.html: what went wrong, one plain sentence first, the detail folded."""
    folder = workspace.dir("feedback") / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    items = "".join(f"<li><pre>{html.escape(p)}</pre></li>" for p in problems)
    (folder / "problems.html").write_text(
        f"<h1>{html.escape(assignment)}: your submission could not be fully graded</h1>"
        f"<p><strong>{html.escape(plain_summary(problems))}</strong></p>"
        f"<p>Parts that could not be graded score zero. Fix the notebook and resubmit, or ask your instructor.</p>"
        f"<details><summary>What the grader saw</summary><ul>{items}</ul></details>", encoding="utf-8")


# (words in a problem, the sentence that says what happened): the first that matches, in this order, leads the page
PLAIN = (
    (("MemoryError", "Cannot allocate memory"),
     "Your code needed more memory than the grader allows, and was stopped."),
    (("kernel died", "killed", "DeadKernelError", "died"),
     "Your notebook's Python process stopped while it ran (a crash, a call to exit, or running out of memory), "
     "so what came after could not be graded."),
    (("did not finish", "timeout", "stopped after", "TimeoutError", "time limit"),
     "A cell ran past its time limit and was stopped: look for an endless loop or a very slow computation."),
    (("not valid notebook JSON", "not a valid Jupyter notebook", "not UTF-8", "was not handed in", "no cells"),
     "The file handed in could not be read as a notebook: hand in the .ipynb file Jupyter saved."),
    (("was deleted", "was restored", "was edited", "was renamed", "changed from", "metadata was changed"),
     "Some of the assignment's own cells had been deleted or changed in your notebook: the originals were put "
     "back and run, and your answers were graded with them."),
)


def plain_summary(problems):
    """One sentence a student can act on for what went wrong, however technical the problems' text is."""
    text = "\n".join(problems)
    for words, sentence in PLAIN:
        if any(word in text for word in words):
            return sentence
    return "Something in your submission kept the grader from grading all of it: the details are below."


def name_exercises(feedback_html):
    """nbgrader's feedback lists every test as "Test cell": name each by its exercise (test_softmax -> `softmax`;
    test_softmax_compiles, the same exercise's kernel compiled for a GPU, keeps the exercise's number)."""
    number, current = itertools.count(1), [0]

    def name(found):
        cell = found.group(1)
        if cell.endswith(COMPILED):
            return f'<a href="#test_{cell}">Exercise {current[0]}: <code>{exercise_of(cell)}</code> compiled</a>'
        current[0] = next(number)
        return f'<a href="#test_{cell}">Exercise {current[0]}: <code>{cell}</code></a>'

    return re.sub(r'<a href="#test_(\w+)">Test cell</a>', name, feedback_html)


def name_exercises_in(folder):
    """name_exercises on every feedback page under `folder`."""
    for page in Path(folder).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        named = name_exercises(text)
        if named != text:
            page.write_text(named, encoding="utf-8")


def export_grades(workspace=Workspace()):
    """nbgrader export's CSV (its own plugin, in this process): one row per student and assignment. Returns its path."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins import CsvExportPlugin
    path = workspace.root / "grades.csv"
    with Gradebook(workspace.db_url) as gradebook:
        CsvExportPlugin(to=str(path)).export(gradebook)
    return path


def cause_text(log):
    """The last error nbgrader reported in `log`, in words a student can act on."""
    errors = re.findall(r"\b(\w+(?:Error|Exception)): (.*)", log)
    if not errors:
        return "see the log below"
    name, message = errors[-1]
    if name == "DeadKernelError":
        return ("the Python kernel died while running the notebook (a cell that calls os._exit or "
                "sys.exit, crashes the interpreter or exhausts memory); nothing could be graded")
    return f"{name}: {message.strip()}"


def _tail(log, lines=12):
    return "\n".join(log.strip().splitlines()[-lines:])
