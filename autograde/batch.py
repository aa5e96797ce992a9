"""Grade a class: every student by real `nbgrader autograde`, in parallel, sandboxed, resumable.

    python -m autograde.batch ASSIGNMENT SUBMISSIONS [--workers N | --scheduler ADDRESS] [limits]

SUBMISSIONS is a folder in nbgrader's submitted layout or an LMS export (a zip or a folder of
loose files named as nbgrader's zip_collect expects); see autograde/collect.py.

Each student is one job, graded on its own in a private copy of the course (its own gradebook
holding only the assignment, its own kernels on Unix sockets) by nbgrader's own autograde and
generate_feedback, run in the worker's process. Notebooks execute in the grader kernel
(autograde/grader_kernel.py): test cells, restored by nbgrader from the gradebook, run in the
grader's Python; every other cell runs in the student's sandboxed kernel. A job takes bytes and
returns bytes, so the same function runs in a local process pool or on a Dask cluster.

Only this process writes the class gradebook: each outcome is merged in one SQLite transaction,
then a done-marker (the submission's sha256) is written. Killed at any moment, the next run grades
only students without a marker for their current submission; a student merged but not yet marked
is graded again and merged again, which replaces the earlier rows.
"""
import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from autograde import pipeline, provisioner
from autograde.sandbox import Limits

KERNEL_NAME = "llm-losses-grader"
# nbgrader's Gradebook runs the `alembic` script, which lives beside this Python (a venv's bin/ may not be
# on PATH when the venv's python is called directly, as `make test` does); worker processes inherit it.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
# How an LMS names loose files (the pattern nbgrader's zip_collect documentation uses):
# "<anything>_<student>_attempt_<yyyy-mm-dd-hh-mm-ss>_<file name>"
NAMED_REGEXP = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.*)"
HERE = Path(__file__).resolve().parent
# Inside a job's private course the student is always called this: nbgrader globs its folders, so an id such as
# smith[2] (a character class to glob) would find no submission; the real id returns with the outcome.
IN_JOB = "student"


@dataclass
class Job:
    student: str
    assignment: str
    files: dict              # file name -> bytes, as submitted
    gradebook: bytes         # a gradebook holding the assignment and no students
    limits: dict
    timestamp: str = "2026-01-01 00:00:00.000000 UTC"
    threads: int = 1         # torch threads in the student's kernel

    @property
    def digest(self):
        return submission_digest(self.files)


@dataclass
class Outcome:
    student: str
    assignment: str
    digest: str
    timestamp: str = ""
    grades: list = field(default_factory=list)    # {notebook, cell, auto_score, max_score, needs_manual_grade}
    comments: list = field(default_factory=list)  # {notebook, cell, auto_comment}
    reasons: list = field(default_factory=list)   # what went wrong, in words the student can act on
    flagged: bool = False                          # test cells were deleted or edited and restored
    autograded: dict = field(default_factory=dict)  # relative path -> bytes
    feedback: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def score(self):
        return sum(g["auto_score"] or 0.0 for g in self.grades)

    @property
    def max_score(self):
        return sum(g["max_score"] for g in self.grades)


def submission_digest(files):
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


# ---------------------------------------------------------------- one student (runs in a worker)

def grade_job(job: Job) -> Outcome:
    """Autograde one submission in a private course folder; never raises for a bad submission."""
    import warnings
    warnings.filterwarnings("ignore", module="nbgrader.api")  # SQLAlchemy 2 notices about nbgrader's own ORM use
    started = time.monotonic()
    outcome = Outcome(job.student, job.assignment, job.digest, job.timestamp)
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        course = Path(tmp)
        _lay_out(course, job)
        outcome.reasons += _unreadable(job.files)
        if not outcome.reasons:
            outcome.reasons += restore_cells(course / "submitted" / IN_JOB / job.assignment, course / "gradebook.db",
                                             job.assignment)
            outcome.flagged = bool(outcome.reasons)
            outcome.reasons += _run_nbgrader(course, job)
        events = course / "events.jsonl"
        if events.exists():
            outcome.reasons += [json.loads(line)["message"] for line in events.read_text().splitlines()]
        _read_grades(course, job, outcome)
        outcome.autograded = _files_under(course / "autograded" / IN_JOB / job.assignment)
        outcome.feedback = _files_under(course / "feedback" / IN_JOB / job.assignment)
    outcome.seconds = time.monotonic() - started
    return outcome


def _lay_out(course, job):
    (course / "gradebook.db").write_bytes(job.gradebook)
    submitted = course / "submitted" / IN_JOB / job.assignment
    submitted.mkdir(parents=True)
    for name, data in job.files.items():
        (submitted / name).write_bytes(data)
    (submitted / "timestamp.txt").write_text(job.timestamp)
    (course / "source" / job.assignment).mkdir(parents=True)  # nbgrader copies extra source files: none
    (course / "trusted.json").write_text(json.dumps(sorted(trusted_cell_digests(course / "gradebook.db",
                                                                                job.assignment))))
    write_kernel_spec(course / "jupyter", {
        "GRADER_TRUSTED_CELLS": str(course / "trusted.json"), "GRADER_LIMITS": json.dumps(job.limits),
        "GRADER_EVENTS": str(course / "events.jsonl"), "OMP_NUM_THREADS": str(job.threads),
        "MKL_NUM_THREADS": str(job.threads)})


def write_kernel_spec(jupyter_dir, env, warm=True):
    """The grader kernel's kernelspec under `jupyter_dir`/kernels (a JUPYTER_PATH entry), with `env` for it.

    warm: forked by this worker's zygote, which only this process can ask (autograde/provisioner.py);
    otherwise nbclient starts the kernelspec's argv, a fresh Python.
    """
    spec = Path(jupyter_dir) / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "autograde.grader_kernel", "-f", "{connection_file}"],
        "metadata": {"kernel_provisioner": {"provisioner_name": provisioner.NAME}} if warm else {},
        "display_name": "Python 3 (graded, sandboxed)", "language": "python",
        "env": dict(env, PYTHONPATH=str(HERE.parent))}))


def trusted_cell_digests(db_path, assignment):
    """sha256 of each test cell's source as nbgrader restores it from the gradebook, and as it re-adds it where the
    student deleted it (the same source under nbgrader's one-line notice, a comment)."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import OverwriteCells
    from autograde.grader_kernel import digest
    notice = OverwriteCells.missing_cell_notification.default_value
    digests = set()
    with Gradebook(f"sqlite:///{db_path}") as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            tests = _test_names(notebook)
            for cell in notebook.source_cells:
                if cell.name in tests:
                    digests |= {digest(cell.source), digest("# " + notice.format(cell_id=cell.name) + cell.source)}
    return digests


def _test_names(notebook):
    """The test cells: graded cells that are not also answers (those are graded by hand)."""
    return {c.name for c in notebook.grade_cells} - {c.name for c in notebook.solution_cells}


def _unreadable(files):
    problems = []
    for name, data in sorted(files.items()):
        if not name.endswith(".ipynb"):
            continue
        try:
            text = data.decode("utf-8")
            json.loads(text)
            nbformat.validate(nbformat.reads(text, as_version=4))
        except UnicodeDecodeError as error:
            problems.append(f"{name} is not UTF-8 text ({error}); it cannot be a notebook.")
        except json.JSONDecodeError as error:
            problems.append(f"{name} is not valid notebook JSON ({error}); it may have been truncated or "
                            f"edited outside Jupyter. Nothing in it could be graded.")
        except (nbformat.ValidationError, ValueError, AttributeError, KeyError, TypeError) as error:
            problems.append(f"{name} is not a valid Jupyter notebook: {str(error).splitlines()[0]}")
    return problems


def restore_cells(submitted, db_path, assignment):
    """Put back what the student changed in the graded cells of each notebook in `submitted` (the grading copy);
    the reasons, one per change. nbgrader restores a test cell's source and type, and re-adds a deleted one;
    its nbgrader metadata (grade, solution, locked, points, grade_id), which nbgrader trusts, is restored here."""
    from nbgrader.api import Gradebook
    problems = []
    with Gradebook(f"sqlite:///{db_path}") as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            path = Path(submitted) / f"{notebook.name}.ipynb"
            if not path.exists():
                problems.append(f"{notebook.name}.ipynb was not handed in: every exercise in it scores zero.")
                continue
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
            if not nb.cells:
                problems.append(f"{notebook.name}.ipynb has no cells at all: there is nothing to grade.")
            expected = _assignment_metadata(notebook)
            tests = _test_names(notebook)
            found = _restore_names(notebook, tests, nb.cells, problems)
            for source in notebook.source_cells:
                cell = found.get(source.name)
                if cell is not None:
                    _restore_metadata(source.name, expected[source.name], source.name in tests, cell, problems)
                if source.name not in tests:
                    continue
                if cell is None:
                    problems.append(f"test cell {source.name} was deleted (or its nbgrader metadata removed); "
                                    f"it was restored from the assignment and run.")
                elif cell.cell_type != source.cell_type:
                    problems.append(f"test cell {source.name} was changed from {source.cell_type} to "
                                    f"{cell.cell_type}; it was restored from the assignment and run.")
                elif cell.source.strip() != _released(source.source):
                    problems.append(f"test cell {source.name} was edited; the original was restored and run.")
            path.write_text(nbformat.writes(nb), encoding="utf-8")
    return problems


def _assignment_metadata(notebook):
    """{grade_id: the nbgrader metadata the assignment gives that cell (grade, solution, locked, task, points)}."""
    points = {c.name: float(c.max_score) for c in notebook.grade_cells}
    solutions, tasks = {c.name for c in notebook.solution_cells}, {c.name for c in notebook.task_cells}
    expected = {}
    for source in notebook.source_cells:
        fields = {"grade": source.name in points, "solution": source.name in solutions, "locked": source.locked,
                  "task": source.name in tasks}
        expected[source.name] = dict(fields, points=points[source.name]) if fields["grade"] else fields
    return expected


def _restore_names(notebook, tests, cells, problems):
    """{grade_id: cell} of the graded cells in `cells`. A cell named what the assignment does not have gets back
    the name of the test cell it is (same source, that name missing), else is left an ordinary cell."""
    known = {source.name for source in notebook.source_cells}
    found = {}
    for cell in cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id")
        if name in known and name not in found:
            found[name] = cell
    for cell in cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id")
        if name is None or name in known:
            continue
        original = next((source.name for source in notebook.source_cells if source.name in tests
                         and source.name not in found and cell.source.strip() == _released(source.source)), None)
        if original:
            cell.metadata.nbgrader["grade_id"], found[original] = original, cell
            problems.append(f"test cell {original} was renamed {name!r}; its name was restored and it was run.")
        else:
            del cell.metadata["nbgrader"]
            problems.append(f"a cell was named {name!r}, which is not a cell of the assignment; "
                            f"it was run as an ordinary cell.")
    return found


def _restore_metadata(name, expected, is_test, cell, problems):
    metadata = cell.metadata.nbgrader
    given = {key: _number(metadata.get(key)) if key == "points" else metadata.get(key, False) for key in expected}
    changed = [f"{key}: {metadata.get(key)!r}" for key, value in expected.items() if given[key] != value]
    if "points" in metadata and "points" not in expected:
        changed.append(f"points: {metadata['points']!r}")
    if changed:
        problems.append(f"{'test cell' if is_test else 'cell'} {name}'s nbgrader metadata was changed "
                        f"({', '.join(changed)}); it was restored from the assignment and the cell was graded as "
                        f"the assignment sets it.")
        metadata.pop("points", None)
        metadata.update(expected)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _released(source):
    """A test cell's source as students received it: the hidden-test region cut out."""
    return re.sub(r"[^\n]*BEGIN HIDDEN TESTS.*?END HIDDEN TESTS[^\n]*\n?", "", source, flags=re.S).strip()


def _run_nbgrader(course, job):
    from nbgrader.apps import NbGraderAPI
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")}
    os.environ.update(JUPYTER_PATH=str(course / "jupyter"), JUPYTER_RUNTIME_DIR=str(course / "runtime"))
    cwd = os.getcwd()
    os.chdir(course)  # the grader kernel's Unix sockets are made relative to here
    try:
        limits = Limits(**job.limits)
        api = NbGraderAPI(config=course_config(course, limits))
        stopped, done = time_limited(limits.grading_seconds, api.autograde, job.assignment, IN_JOB, force=True,
                                     create=True)
        if stopped:
            return [f"grading was stopped after {limits.grading_seconds:g} s, the limit on grading one submission "
                    f"(--grading-seconds); nothing was graded"]
        if not done["success"]:
            backstop = (" (nbgrader's own limit on a cell, twice --cell-seconds plus 60 s: the grader kernel did not "
                        "answer in time)" if "CellTimeoutError" in _last_error(done) else "")
            return [f"nbgrader could not autograde this submission: {_last_error(done)}{backstop}"]
        stopped, made = time_limited(limits.feedback_seconds, api.generate_feedback, job.assignment, IN_JOB,
                                     force=True)
        if stopped:
            return [f"writing the feedback was stopped after {limits.feedback_seconds:g} s, its limit "
                    f"(--feedback-seconds); the grades stand, but there is no feedback page"]
        if not made["success"]:
            return [f"feedback could not be generated: {_last_error(made)}"]
        pipeline.name_exercises_in(course / "feedback")
        return []
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def course_config(course, limits):
    """The course's nbgrader_config.py, pointed at a private course folder and the grader kernel."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=str(HERE)).load_config()
    directories = {"root": str(course), "source_directory": "source", "release_directory": "release",
                   "submitted_directory": "submitted", "autograded_directory": "autograded",
                   "feedback_directory": "feedback", "solution_directory": "solution",
                   "db_url": f"sqlite:///{course / 'gradebook.db'}"}
    overrides = Config({"CourseDirectory": directories,
                        "Execute": {"kernel_name": KERNEL_NAME, "interrupt_on_timeout": False,
                                    # the grader kernel enforces the limits; this is only a backstop
                                    "timeout": int(limits.cell_seconds * 2 + 60)},
                        # Unix sockets, named by absolute path: parallel jobs never race for TCP ports
                        "KernelManager": {"transport": "ipc", "ip": str(course / "kernel")}})
    config.merge(overrides)
    return config


class StageTimeout(BaseException):
    """Raised in a stage's thread when it outlives its limit (BaseException: no `except Exception` keeps it)."""


def time_limited(seconds, function, *args, **kwargs):
    """function(*args, **kwargs) in a thread of its own, stopped after `seconds` of wall time (StageTimeout is
    raised in it, between two bytecodes); returns (stopped, its value). The stop can only land in that thread,
    which ends with it: nothing the caller runs afterwards can see it. A stage stuck in one C call, which
    no stop reaches, is left behind a minute later, still running, and reported stopped."""
    outcome = {}

    def stage():
        try:
            outcome["value"] = function(*args, **kwargs)
        except StageTimeout:
            pass
        except BaseException as error:  # handed to the caller, as a plain call would raise it
            outcome["error"] = error

    worker = threading.Thread(target=stage, name=f"stage {getattr(function, '__name__', '')}", daemon=True)
    worker.start()
    worker.join(seconds)
    stopped = worker.is_alive() and not outcome  # (a stage ending at this very moment meets it in its last steps)
    if stopped:  # it may catch the stop (nbgrader catches everything) and return: it was stopped all the same
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(StageTimeout))
    worker.join(60)  # a stage stuck in one C call never meets the stop: it is left behind, and the job goes on
    if "error" in outcome:
        raise outcome["error"]
    return stopped, outcome.get("value")


def _last_error(done):
    """The first specific error in nbgrader's log (its closing error only says 'see above')."""
    return pipeline.cause_text(done.get("log") or done.get("error") or "")


def _read_grades(course, job, outcome):
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            submission = gb.find_submission(job.assignment, IN_JOB)
        except MissingEntry:  # nothing ran: every grade cell scores zero
            for notebook in gb.find_assignment(job.assignment).notebooks:
                outcome.grades += [{"notebook": notebook.name, "cell": c.name, "auto_score": 0.0,
                                    "max_score": c.max_score, "needs_manual_grade": False}
                                   for c in notebook.grade_cells]
            return
        outcome.timestamp = str(submission.timestamp or job.timestamp)
        for notebook in submission.notebooks:
            outcome.grades += [{"notebook": notebook.name, "cell": g.name, "auto_score": g.auto_score,
                                "max_score": g.max_score, "needs_manual_grade": g.needs_manual_grade}
                               for g in notebook.grades]
            outcome.comments += [{"notebook": notebook.name, "cell": c.name, "auto_comment": c.auto_comment}
                                 for c in notebook.comments]


def _files_under(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the class (runs here)

def template_gradebook(workspace, assignment):
    """The class gradebook's copy of one assignment, without students: what each job grades against."""
    import sqlite3
    from nbgrader.api import Gradebook, MissingEntry
    workspace.root.mkdir(parents=True, exist_ok=True)
    with Gradebook(workspace.db_url) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry:
            pipeline.release(assignment, workspace)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "template.db"
        with sqlite3.connect(workspace.root / "gradebook.db") as source, sqlite3.connect(copy) as target:
            source.backup(target)
        with Gradebook(f"sqlite:///{copy}") as gb:
            for student in list(gb.students):
                for submission in list(student.submissions):
                    _delete_submission(gb, submission)
                gb.db.delete(student)
            gb.db.commit()
        return copy.read_bytes()


def _delete_submission(gb, submission):
    for notebook in submission.notebooks:
        for row in list(notebook.grades) + list(notebook.comments):
            gb.db.delete(row)
        gb.db.delete(notebook)
    gb.db.delete(submission)


def merge(outcome, workspace):
    """Write one student's outcome into the class gradebook, in one transaction, then their files."""
    from nbgrader.api import Comment, Gradebook, Grade, MissingEntry, SubmittedAssignment, SubmittedNotebook
    from nbgrader import utils
    with Gradebook(workspace.db_url) as gb:
        gb.update_or_create_student(outcome.student)
        try:
            _delete_submission(gb, gb.find_submission(outcome.assignment, outcome.student))
            gb.db.flush()  # the old rows go first (same transaction): the new ones reuse their unique keys
        except MissingEntry:
            pass
        with gb.db.no_autoflush:  # build the whole submission, then add it: one INSERT batch, one commit
            assignment = gb.find_assignment(outcome.assignment)
            submission = SubmittedAssignment(assignment=assignment, student=gb.find_student(outcome.student),
                                             timestamp=utils.parse_utc(outcome.timestamp) if outcome.timestamp else None)
            grades = {(g["notebook"], g["cell"]): g for g in outcome.grades}
            comments = {(c["notebook"], c["cell"]): c for c in outcome.comments}
            for notebook in assignment.notebooks:
                submitted = SubmittedNotebook(notebook=notebook, assignment=submission, flagged=outcome.flagged)
                for cell in notebook.grade_cells:
                    row = grades.get((notebook.name, cell.name), {})
                    Grade(cell_id=cell.id, notebook=submitted, auto_score=row.get("auto_score", 0.0),
                          needs_manual_grade=row.get("needs_manual_grade", False))
                for cell in list(notebook.solution_cells) + list(notebook.task_cells):
                    Comment(cell_id=cell.id, notebook=submitted,
                            auto_comment=comments.get((notebook.name, cell.name), {}).get("auto_comment"))
            gb.db.add(submission)
        gb.db.commit()
    for step, files in (("autograded", outcome.autograded), ("feedback", outcome.feedback)):
        _replace_folder(workspace.dir(step) / outcome.student / outcome.assignment, files)
    if outcome.reasons:
        pipeline.write_problem_feedback(workspace, outcome.student, outcome.assignment, outcome.reasons)


def _replace_folder(folder, files):
    fresh = folder.with_name(folder.name + ".incoming")
    shutil.rmtree(fresh, ignore_errors=True)
    for name, data in files.items():
        (fresh / name).parent.mkdir(parents=True, exist_ok=True)
        (fresh / name).write_bytes(data)
    shutil.rmtree(folder, ignore_errors=True)
    if files:
        fresh.rename(folder)


def marker_path(workspace, assignment, student):
    return workspace.root / "done" / assignment / f"{student}.json"


def _finished(workspace, job):
    """The outcome summary of this exact submission if it was merged and marked, else None."""
    path = marker_path(workspace, job.assignment, job.student)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("digest") == job.digest:
            return saved
    return None


def _mark(workspace, outcome):
    path = marker_path(workspace, outcome.assignment, outcome.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in asdict(outcome).items() if k not in ("autograded", "feedback")}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(summary, indent=1))
    os.replace(temporary, path)  # atomic: a marker is whole or absent


def executor(workers=None, scheduler=None):
    """A concurrent.futures executor: local worker processes, or a Dask cluster's workers."""
    if scheduler:
        from distributed import Client
        return Client(scheduler).get_executor(pure=False)
    import multiprocessing
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=multiprocessing.get_context("spawn"))


class SandboxUnavailable(RuntimeError):
    pass


def check_sandbox(limits):
    """Refuse to grade where a student's code could not be boxed, unless told the class is trusted."""
    from autograde import sandbox
    if limits.unsafe_no_sandbox:
        print("warning: --unsafe-no-sandbox: students' code runs with resource limits only, and can read and write "
              "whatever this user can", file=sys.stderr)
        return
    problem = sandbox.problem()
    if problem:
        raise SandboxUnavailable(f"students' code cannot be sandboxed here: {problem}. Install bubblewrap "
                                 f"(apt-get install bubblewrap) on a kernel with user namespaces, or pass "
                                 f"--unsafe-no-sandbox for a class you trust; nothing was graded")


def grade_class(assignment, submissions, workspace=pipeline.Workspace(), workers=None, scheduler=None,
                limits=Limits(), progress=True, roster=None, named_regexp=NAMED_REGEXP):
    """Grade every submission not yet graded; returns ({student: outcome summary}, intake problems).
    Raises SandboxUnavailable where bubblewrap cannot box a student's code (and limits do not say to go on)."""
    check_sandbox(limits)
    from autograde.collect import collect
    intake = collect(Path(submissions), assignment, [f"{assignment}.ipynb"], roster=roster, named_regexp=named_regexp)
    template = template_gradebook(workspace, assignment)
    threads = 1 if scheduler or (workers or os.cpu_count()) > 1 else (os.cpu_count() or 1)
    jobs = [Job(s.student, assignment, s.files, template, asdict(limits),
                s.timestamp or "2026-01-01 00:00:00.000000 UTC", threads) for s in intake.submissions]
    results = {job.student: _finished(workspace, job) for job in jobs}
    todo = [job for job in jobs if results[job.student] is None]
    bar = _progress(len(jobs), len(jobs) - len(todo), progress)
    if todo:
        with executor(workers, scheduler) as pool:
            futures = {pool.submit(grade_job, job): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - the grader failed, not the student: not marked,
                    results[job.student] = {"grades": [], "flagged": False, "reasons": [  # so the next run retries
                        f"NOT GRADED, the grader itself failed ({type(error).__name__}: {error}); run again"]}
                    continue
                merge(outcome, workspace)
                _mark(workspace, outcome)
                results[job.student] = json.loads(marker_path(workspace, assignment, job.student).read_text())
                bar.update(1)
    bar.close()
    return results, intake.problems


def _progress(total, done, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="student", disable=not enabled, file=sys.stderr,
                desc="grading", dynamic_ncols=True)


# ---------------------------------------------------------------- what the instructor reads

def failures_by_exercise(results):
    """Per graded cell: points, and how many students got full, partial and zero marks on it."""
    rows = {}
    for summary in results.values():
        for g in summary["grades"]:
            row = rows.setdefault(g["cell"], {"exercise": g["cell"], "points": g["max_score"], "full": 0,
                                              "partial": 0, "zero": 0})
            score = g["auto_score"] or 0.0
            row["full" if score >= g["max_score"] else "zero" if score == 0 else "partial"] += 1
    return list(rows.values())


def plot_failures(rows, path):
    """A stacked bar per exercise: students with full, partial and zero marks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    names = [r["exercise"].removeprefix("test_") for r in rows]
    bottom = [0] * len(rows)
    for kind, colour in (("full", "tab:green"), ("partial", "tab:orange"), ("zero", "tab:red")):
        counts = [r[kind] for r in rows]
        ax.bar(names, counts, bottom=bottom, color=colour, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_ylabel("students")
    ax.set_title("Where the class lost points")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results, problems):
    """Plain text: each student's score and reasons, the intake problems, the failures by exercise."""
    lines = ["student                score      reasons", "-" * 72]
    for student, s in sorted(results.items()):
        score = sum(g["auto_score"] or 0.0 for g in s["grades"])
        top = sum(g["max_score"] for g in s["grades"])
        reasons = s["reasons"]
        lines.append(f"{student:22s} {score:5g} / {top:<4g} {reasons[0][:100] if reasons else ''}")
        lines += [f"{'':35s}{r[:100]}" for r in reasons[1:]]
    if problems:
        lines += ["", "Submissions set aside or renamed:"] + [f"  {getattr(p, 'message', p)}" for p in problems]
    lines += ["", "exercise                          points  full  partial  zero", "-" * 62]
    lines += [f"{r['exercise']:34s}{r['points']:6g}{r['full']:6d}{r['partial']:9d}{r['zero']:6d}"
              for r in failures_by_exercise(results)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Grade a class with nbgrader, in parallel and sandboxed.")
    parser.add_argument("assignment")
    parser.add_argument("submissions", help="nbgrader submitted/ layout, or an LMS zip / folder of loose files")
    parser.add_argument("--workspace", default=str(pipeline.HERE),
                        help="where the gradebook, autograded/, feedback/ and grades.csv go (default: autograde/)")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores)")
    parser.add_argument("--scheduler", help="a Dask scheduler address (tcp://host:8786): grade on its workers")
    parser.add_argument("--roster", help="a CSV with an id column: students not in it, or missing, are reported")
    parser.add_argument("--named-regexp", default=NAMED_REGEXP,
                        help="how loose LMS file names give student_id, timestamp and file_id (default: %(default)s)")
    for name, value in asdict(Limits()).items():
        if isinstance(value, bool):
            parser.add_argument("--" + name.replace("_", "-"), action="store_true",
                                help="grade without bubblewrap's box (limits only): for a class you trust")
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    limits = Limits(**{name: getattr(args, name) for name in asdict(Limits())})
    try:
        check_sandbox(limits)
    except SandboxUnavailable as error:
        parser.exit(2, f"error: {error}\n")
    workspace = pipeline.Workspace(root=Path(args.workspace).resolve())
    from autograde.collect import read_roster
    roster = read_roster(args.roster) if args.roster else None
    results, problems = grade_class(args.assignment, args.submissions, workspace, args.workers, args.scheduler,
                                    limits, progress=not args.quiet, roster=roster, named_regexp=args.named_regexp)
    grades = pipeline.export_grades(workspace)
    chart = workspace.root / f"failures_{args.assignment}.png"
    plot_failures(failures_by_exercise(results), chart)
    print(report(results, problems))
    print(f"\ngrades: {grades}\nfeedback: {workspace.dir('feedback')}/<student>/{args.assignment}/\nchart: {chart}")


if __name__ == "__main__":
    main()
