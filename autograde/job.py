"""Grade one student: a private copy of the course, real `nbgrader autograde` and `generate_feedback`, the outcome.

A Job carries bytes in (the submission, the assignment's gradebook, the limits) and its Outcome bytes out
(grades, comments, the autograded notebook, the feedback), so the same function runs in a local worker
process or on a Dask worker. Notebooks execute in the grader kernel (autograde/grader_kernel.py): test
cells, restored by nbgrader from the gradebook, run in the grader's Python; every other cell runs in the
student's sandboxed kernel.
"""
import ctypes
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograde import provisioner, zygote
from autograde.course import cause_text, name_exercises_in, nbgrader_config
from autograde.restore import restore_cells, tests_of
from autograde.sandbox import Limits

KERNEL_NAME = "llm-losses-grader"
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


def submission_digest(files):
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def grade_job(job: Job) -> Outcome:
    """Autograde one submission in a private course folder; never raises for a bad submission."""
    import warnings
    from nbformat.warnings import MissingIDFieldWarning
    warnings.filterwarnings("ignore", module="nbgrader.api")  # SQLAlchemy 2 notices about nbgrader's own ORM use
    # nbgrader re-adds a deleted test cell without a cell id, and nbformat warns of it on the instructor's console
    warnings.filterwarnings("ignore", category=MissingIDFieldWarning)
    started = time.monotonic()
    # Started here, in the worker's own thread, not in the grading stage's thread (autograde.provisioner asks for it
    # there): the zygote dies with the thread that started it (PR_SET_PDEATHSIG), and so would start once per job
    zygote.for_this_worker()
    outcome = Outcome(job.student, job.assignment, job.digest, job.timestamp)
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        course = Path(tmp)
        _lay_out(course, job)
        outcome.reasons += unreadable(job.files)
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
            tests = tests_of(notebook)
            for cell in notebook.source_cells:
                if cell.name in tests:
                    digests |= {digest(cell.source), digest("# " + notice.format(cell_id=cell.name) + cell.source)}
    return digests


def unreadable(files):
    """A message for each notebook in `files` that nbgrader could not even open."""
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
        name_exercises_in(course / "feedback")
        return []
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def course_config(course, limits):
    """The course's nbgrader config, pointed at a private course folder and the grader kernel."""
    directories = {"root": str(course), "source_directory": "source", "release_directory": "release",
                   "submitted_directory": "submitted", "autograded_directory": "autograded",
                   "feedback_directory": "feedback", "solution_directory": "solution",
                   "db_url": f"sqlite:///{course / 'gradebook.db'}"}
    return nbgrader_config(CourseDirectory=directories,
                           Execute={"kernel_name": KERNEL_NAME, "interrupt_on_timeout": False,
                                    # the grader kernel enforces the limits; this is only a backstop
                                    "timeout": int(limits.cell_seconds * 2 + 60)},
                           # Unix sockets, named by absolute path: parallel jobs never race for TCP ports
                           KernelManager={"transport": "ipc", "ip": str(course / "kernel")})


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
    return cause_text(done.get("log") or done.get("error") or "")


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
