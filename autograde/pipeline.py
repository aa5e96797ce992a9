"""The road a class travels, on top of plain nbgrader commands:
release -> submissions -> autograde -> feedback -> grades.

nbgrader grades a whole class in one command and stops at the first student whose notebook
it cannot read. Here every student is graded on their own, a submission nbgrader cannot
grade becomes a clear message in that student's feedback and a zero, and the rest of the
class is graded as usual.
"""
import csv
import html
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOLUTIONS, RELEASE = ROOT / "solutions", ROOT / "notebooks"
# where nbgrader releases (nbgrader_config.py); notebooks/ is written by autograde.release alone
BUILD_RELEASE = ROOT / "build" / "release"


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

    def nbgrader(self, *args):
        """Run one nbgrader command with the course config, pointed at this workspace."""
        self.root.mkdir(parents=True, exist_ok=True)
        overrides = [f"--CourseDirectory.{step}_directory={self.dir(step)}"
                     for step in ("submitted", "autograded", "feedback")]
        overrides += [f"--CourseDirectory.release_directory={self.release}", f"--CourseDirectory.db_url={self.db_url}"]
        # nbgrader calls the `alembic` script to create its database: it must be found beside this python
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        return subprocess.run([sys.executable, "-m", "nbgrader", *args, *overrides],
                              cwd=HERE, env=env, capture_output=True, text=True)


@dataclass
class Result:
    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def verdict(self):
        if self.problems and not self.score:
            return "not graded"
        if self.max_score and self.score >= self.max_score:
            return "full marks"
        return "zero" if self.score == 0 else "partial"


def execute_solution(assignment, timeout=600):
    """Run a solution notebook top to bottom in a fresh kernel; returns (executed notebook, seconds)."""
    source = SOLUTIONS / assignment / f"{assignment}.ipynb"
    nb = nbformat.read(source, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    return nb, time.perf_counter() - start


def release(assignment, workspace=Workspace()):
    """nbgrader generate_assignment: solutions/ -> the release folder, and the assignment into the gradebook."""
    done = workspace.nbgrader("generate_assignment", assignment, "--force")
    if done.returncode:
        raise RuntimeError(f"nbgrader could not release {assignment}:\n{_tail(done)}")


def submit(student, assignment, notebook_file, workspace=Workspace()):
    """Place a student's notebook where nbgrader collects submissions."""
    target = workspace.dir("submitted") / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{assignment}.ipynb").write_bytes(Path(notebook_file).read_bytes())
    (target / "timestamp.txt").write_text("2026-11-23 12:00:00.000000 UTC")


def unreadable_notebooks(student, assignment, workspace=Workspace()):
    """Messages for submitted notebooks nbgrader could not even open."""
    problems = []
    for path in sorted((workspace.dir("submitted") / student / assignment).glob("*.ipynb")):
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
            nbformat.validate(nbformat.reads(text, as_version=4))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"{path.name} is not valid notebook JSON ({error}); "
                            f"it may have been truncated or edited outside Jupyter.")
        except (nbformat.ValidationError, ValueError, AttributeError, KeyError, TypeError) as error:
            problems.append(f"{path.name} is not a valid Jupyter notebook: {str(error).splitlines()[0]}")
    return problems


def autograde(student, assignment, workspace=Workspace()):
    """Autograde one student's submission and write their feedback; never raises for a bad submission."""
    result = Result(student, assignment)
    result.problems = unreadable_notebooks(student, assignment, workspace)
    if not result.problems:
        graded = workspace.nbgrader("autograde", assignment, f"--student={student}", "--force")
        if graded.returncode:
            result.problems.append(f"nbgrader could not autograde this submission: {_cause(graded)}\n{_tail(graded)}")
        else:
            made = workspace.nbgrader("generate_feedback", assignment, f"--student={student}", "--force")
            if made.returncode:
                result.problems.append(f"feedback could not be generated:\n{_tail(made)}")
            name_exercises_in(workspace.dir("feedback") / student / assignment)
    if result.problems:
        write_problem_feedback(workspace, student, assignment, result.problems)
    result.score, result.max_score = _scores(student, assignment, workspace)
    return result


def _scores(student, assignment, workspace):
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(workspace.db_url) as gradebook:
        max_score = gradebook.find_assignment(assignment).max_score
        gradebook.update_or_create_student(student)
        try:
            return gradebook.find_submission(assignment, student).score, max_score
        except MissingEntry:
            return 0.0, max_score


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
    """nbgrader's feedback lists every test as "Test cell": name each by its exercise (test_softmax -> `softmax`)."""
    number = itertools.count(1)
    return re.sub(r'<a href="#test_(\w+)">Test cell</a>',
                  lambda m: f'<a href="#test_{m.group(1)}">Exercise {next(number)}: <code>{m.group(1)}</code></a>',
                  feedback_html)


def name_exercises_in(folder):
    """name_exercises on every feedback page under `folder`."""
    for page in Path(folder).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        named = name_exercises(text)
        if named != text:
            page.write_text(named, encoding="utf-8")


def export_grades(workspace=Workspace()):
    """nbgrader export: one CSV row per student and assignment. Returns the CSV path."""
    path = workspace.root / "grades.csv"
    done = workspace.nbgrader("export", f"--CsvExportPlugin.to={path}")
    if done.returncode:
        raise RuntimeError(f"nbgrader export failed:\n{_tail(done)}")
    return path


def grade_table(results):
    """A plain-text table: student, assignment, score, verdict and the first line of any problem."""
    rows = [("student", "assignment", "score", "verdict", "note")]
    for r in results:
        note = r.problems[0].splitlines()[0] if r.problems else ""
        rows.append((r.student, r.assignment, f"{r.score:g} / {r.max_score:g}", r.verdict, note[:110]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def read_grades_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cause(done):
    return cause_text(done.stdout + done.stderr)


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


def _tail(done, lines=12):
    text = (done.stdout + done.stderr).strip().splitlines()
    return "\n".join(text[-lines:])
