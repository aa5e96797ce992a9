"""The batch grader (autograde/batch.py) on an adversarial class of notebook-01 submissions.

One run grades the whole class (tests/adversarial.py) in parallel; each test then checks one
promise: the honest score and a reason for every attack or fault, the gradebook and export in
step, feedback without hidden tests, nothing escaping the sandbox, resumption after SIGKILL, and
the same grades from a Dask cluster. (That every notebook's solution gets full marks from it, Triton
kernels included, is tests/test_course.py's, from the session's grading of the sample class.)
"""
import csv
import functools
import html
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

import adversarial
from conftest import only_in_blocks, require_box
from autograde import batch, course, gradebook, job, report
from autograde.sandbox import Limits

pytestmark = pytest.mark.slow
A = adversarial.ASSIGNMENT
# short, so that the students who run into a limit cost seconds; a cell may take 10 s (asks_for_grader waits 8 s
# for its escalation), a feedback page 8 s (a whole class's pages take under 1 s each)
LIMITS = Limits(cell_seconds=10, notebook_seconds=120, feedback_seconds=8)
STUDENTS = adversarial.STUDENTS
ESCAPED = [Path(f"/tmp/escaped-{student}.txt") for student in ("asks_for_grader", "plants_symlinks")] + [
    course.ROOT / "escaped-escapes.txt"]


@functools.cache
def adversarial_class():
    """{student: (submitted bytes, what the grader must make of it)}: built on first use, not at collection."""
    built = adversarial.build(course.RELEASE / A / f"{A}.ipynb", course.SOLUTIONS / A / f"{A}.ipynb", course.ROOT)
    assert tuple(built) == STUDENTS, "adversarial.STUDENTS must name the class build() makes, in its order"
    return built


def write_submissions(folder, students):
    for student in students:
        target = folder / student / A
        target.mkdir(parents=True)
        (target / f"{A}.ipynb").write_bytes(adversarial_class()[student][0])
    return folder


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def scores(results):
    return {student: report.score(summary)[0] for student, summary in results.items()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_box()
    root = tmp_path_factory.mktemp("adversarial")
    for path in ESCAPED:
        path.unlink(missing_ok=True)
    submissions = write_submissions(root / "submitted_in", STUDENTS)
    workspace = course.Workspace(root=root / "course")
    results, problems = batch.grade_class(A, submissions, workspace, workers=2, limits=LIMITS, progress=False)
    return results, problems, workspace


@pytest.mark.parametrize("student", STUDENTS)
def test_each_submission_gets_its_honest_score_and_a_reason(graded, student):
    results, _, workspace = graded
    expect, got = adversarial_class()[student][1], results[student]
    reasons = "\n".join(got["reasons"])
    assert scores(results)[student] == expect.score, f"{student}: {reasons}"
    for words in expect.reasons:
        assert words in reasons, f"{student}: {words!r} not in the reasons:\n{reasons}"
    assert got["flagged"] == expect.flagged
    if expect.output:
        autograded = workspace.dir("autograded") / student / A / f"{A}.ipynb"
        text = autograded.read_text()
        for words in expect.output:
            assert words in text, f"{student}: {words!r} not in the notebook's outputs"
    if got["reasons"]:
        problems = workspace.dir("feedback") / student / A / "problems.html"
        assert problems.exists() and "could not be fully graded" in problems.read_text()
    for words in expect.hidden:
        shown = [p for p in (workspace.dir("feedback") / student / A).rglob("*") if p.is_file()]
        assert all(words not in p.read_text(errors="replace") for p in shown) and words not in reasons, \
            f"{student}: {words!r} reached what the student or the instructor reads"


def test_nothing_escaped_the_sandbox(graded):
    assert not [path for path in ESCAPED if path.exists()]
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == b"sleep\x004321.5\x00"]
    assert not left, f"processes leaves_processes started outlived its job: {left}"
    notebook = nbformat.read(graded[2].dir("autograded") / "pickle_bomb" / A / f"{A}.ipynb", as_version=4)
    outputs = str([cell.get("outputs") for cell in notebook.cells])
    assert "Unpickler" in outputs or "weights_only" in outputs or "cannot be graded" in outputs, outputs[:2000]
    assert "unpickled in the grader!" not in outputs


def test_gradebook_and_nbgrader_export_hold_exactly_the_merged_grades(graded):
    results, _, workspace = graded
    from nbgrader.api import Gradebook
    with Gradebook(workspace.db_url) as gb:
        stored = {s.student.id: s.score for s in gb.find_assignment(A).submissions}
        flagged = {s.student.id for s in gb.find_assignment(A).submissions if any(n.flagged for n in s.notebooks)}
    assert stored == scores(results)
    assert flagged == {s for s, (_, e) in adversarial_class().items() if e.flagged}
    exported = {row["student_id"]: float(row["score"]) for row in
                csv.DictReader(open(course.export_grades(workspace))) if row["assignment"] == A}
    assert exported == scores(results)


def test_feedback_shows_each_test_and_its_message_but_no_hidden_test_source(graded):
    workspace = graded[2]
    hidden = sorted(only_in_blocks(A, "HIDDEN TESTS", shortest=25))
    assert hidden, "notebook 01 has hidden tests to hide"
    from nbconvert import HTMLExporter  # the control: the same search finds them in the instructor's copy
    instructor = HTMLExporter().from_filename(str(workspace.dir("autograded") / "honest" / A / f"{A}.ipynb"))[0]
    assert any(line in html.unescape(re.sub(r"<[^>]+>", "", instructor)) for line in hidden)
    for student in ("honest", "patches_grading", "loops_when_tested"):
        page = _text(workspace.dir("feedback") / student / A / f"{A}.html")
        assert "test_categorical_nll" in page and "Exercise 1: categorical_nll" in page and "Test cell" not in page
        leaked = [line for line in hidden if line in page]
        assert not leaked, f"{student}'s feedback shows hidden test source: {leaked[:2]}"
    graded_nb = nbformat.read(workspace.dir("autograded") / "patches_grading" / A / f"{A}.ipynb", as_version=4)
    errors = [o for c in graded_nb.cells if c.metadata.get("nbgrader", {}).get("grade") for o in c.outputs
              if o.output_type == "error"]
    assert errors and errors[0].traceback[0].startswith("categorical_nll("), errors[:1]  # the check's message first,
    assert not any("grading.py" in line or "Traceback" in line for e in errors for line in e.traceback)  # and alone
    failing = _text(workspace.dir("feedback") / "patches_grading" / A / f"{A}.html")
    assert "returned" in failing and "expected" in failing  # the check's explanation is kept


def _text(html_file):
    """What a reader of the page sees: tags (syntax highlighting splits code into spans) removed."""
    return html.unescape(re.sub(r"<[^>]+>", "", Path(html_file).read_text()))


def test_failures_by_exercise_counts_every_student(graded):
    results = graded[0]
    rows = report.failures_by_exercise(results)
    assert {r["exercise"] for r in rows} == {g["cell"] for g in results["honest"]["grades"]}
    assert all(r["full"] + r["partial"] + r["zero"] == len(STUDENTS) for r in rows)
    gaussian = next(r for r in rows if r["exercise"] == "test_gaussian_nll")
    keeps_the_last = {"exits_when_tested", "returns_a_broadcast_view",  # they lose points elsewhere, not here
                      "reaches_shortcuts_by_other_names"}
    assert gaussian["full"] == sum(1 for s, (_, e) in adversarial_class().items()
                                   if e.score == 12 or s in keeps_the_last)


def test_killed_batch_resumes_with_the_grades_of_an_uninterrupted_run(graded, tmp_path):
    students = ["honest", "patches_torch", "segfault", "deletes_tests", "broken_json", "os_exit"]
    submissions = write_submissions(tmp_path / "in", students)
    root = tmp_path / "course"
    command = [sys.executable, "-m", "autograde.batch", A, str(submissions), f"--workspace={root}",
               "--workers=2", "--quiet", f"--cell-seconds={LIMITS.cell_seconds:g}",
               f"--notebook-seconds={LIMITS.notebook_seconds:g}"]
    first = subprocess.Popen(command, cwd=course.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    markers = root / "done" / A
    deadline = time.monotonic() + 300
    while len(list(markers.glob("*.json"))) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the batch and every worker and kernel it started
    first.wait()
    before = {p.name: p.stat().st_mtime_ns for p in markers.glob("*.json")}
    assert 2 <= len(before) < len(students), "the kill should land mid-batch"

    again = subprocess.run(command, cwd=course.ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    after = {p.name: p.stat().st_mtime_ns for p in markers.glob("*.json")}
    assert {k: after[k] for k in before} == before, "students already marked were graded again"
    resumed = {s: gradebook.finished(course.Workspace(root=root),
                                     job.Job(s, A, {f"{A}.ipynb": adversarial_class()[s][0]}, b"", {}))
               for s in students}
    assert scores(resumed) == {s: scores(graded[0])[s] for s in students}
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        assert {s.student.id: s.score for s in gb.find_assignment(A).submissions} == scores(resumed)


def test_dask_cluster_and_an_lms_zip_give_the_same_grades(graded, tmp_path):
    from distributed import LocalCluster
    students = ["honest", "escapes", "segfault"]  # LMS ids: no underscores, which the name pattern splits on
    export = tmp_path / "lms.zip"
    with zipfile.ZipFile(export, "w") as archive:
        submitted = adversarial_class()
        for student in students:
            archive.writestr(f"Week 1_{student}_attempt_2026-11-20-10-00-00_{A}.ipynb", submitted[student][0])
        archive.writestr(f"Week 1_honest_attempt_2026-11-19-09-00-00_{A}.ipynb", submitted["patches_torch"][0])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        results, problems = batch.grade_class(A, export, course.Workspace(root=tmp_path / "course"),
                                              scheduler=cluster.scheduler_address, limits=LIMITS, progress=False)
    assert scores(results) == {s: scores(graded[0])[s] for s in students}
    assert any("honest" == p.student and "2026-11-19" in p.message + p.origin for p in problems), \
        "the older duplicate of honest's notebook must be reported as set aside"
