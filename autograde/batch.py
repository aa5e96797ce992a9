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
import contextlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from autograde import course, gradebook, report
from autograde.job import Job, grade_job
from autograde.sandbox import Limits

# How an LMS names loose files (the pattern nbgrader's zip_collect documentation uses):
# "<anything>_<student>_attempt_<yyyy-mm-dd-hh-mm-ss>_<file name>"
NAMED_REGEXP = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.*)"
# how a summary's reason starts where the grader failed, not the student (nothing was marked: a rerun grades it)
GRADER_FAILED = "NOT GRADED, the grader itself failed"


@contextlib.contextmanager
def executor(workers=None, scheduler=None):
    """A concurrent.futures executor, for a `with`: local worker processes, or a Dask cluster's workers (through a
    client of this batch's own, closed with it: one left open retries the cluster's address after it is gone)."""
    if scheduler:
        from distributed import Client
        with Client(scheduler) as client, client.get_executor(pure=False) as pool:
            yield pool
        return
    import multiprocessing
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


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


def grade_class(assignment, submissions, workspace=course.Workspace(), workers=None, scheduler=None,
                limits=Limits(), progress=True, roster=None, named_regexp=NAMED_REGEXP):
    """Grade every submission not yet graded; returns ({student: outcome summary}, intake problems).
    Raises SandboxUnavailable where bubblewrap cannot box a student's code (and limits do not say to go on)."""
    return grade({assignment: submissions}, workspace, workers, scheduler, limits, progress, roster,
                 named_regexp)[assignment]


def grade(classes, workspace=course.Workspace(), workers=None, scheduler=None, limits=Limits(), progress=True,
          roster=None, named_regexp=NAMED_REGEXP):
    """grade_class for several assignments at once, {assignment: submissions}, on one pool of workers (no core
    waits for one assignment's slowest student before the next assignment starts); returns
    {assignment: ({student: outcome summary}, intake problems)}."""
    check_sandbox(limits)
    from autograde.collect import collect
    threads = 1 if scheduler or (workers or os.cpu_count()) > 1 else (os.cpu_count() or 1)
    jobs, results, problems = [], {}, {}
    for assignment, submissions in classes.items():
        intake = collect(Path(submissions), assignment, [f"{assignment}.ipynb"], roster=roster,
                         named_regexp=named_regexp)
        template = gradebook.template_gradebook(workspace, assignment)
        jobs += [Job(s.student, assignment, s.files, template, asdict(limits), s.timestamp or Job.timestamp, threads)
                 for s in intake.submissions]
        results[assignment], problems[assignment] = {}, intake.problems
    for job in jobs:
        results[job.assignment][job.student] = gradebook.finished(workspace, job)
    todo = [job for job in jobs if results[job.assignment][job.student] is None]
    bar = _progress(len(jobs), len(jobs) - len(todo), progress)
    if todo:
        with executor(workers, scheduler) as pool:
            futures = {pool.submit(grade_job, job): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - the grader failed, not the student: not marked,
                    results[job.assignment][job.student] = {  # so the next run grades them again
                        "grades": [], "flagged": False, "seconds": 0.0,
                        "reasons": [f"{GRADER_FAILED} ({type(error).__name__}: {error}); run again"]}
                    continue
                gradebook.merge(outcome, workspace)
                gradebook.mark(workspace, outcome)
                results[job.assignment][job.student] = gradebook.summary(outcome)
                bar.update(1)
    bar.close()
    return {assignment: (results[assignment], problems[assignment]) for assignment in classes}


def _progress(total, done, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="student", disable=not enabled, file=sys.stderr,
                desc="grading", dynamic_ncols=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Grade a class with nbgrader, in parallel and sandboxed.")
    parser.add_argument("assignment")
    parser.add_argument("submissions", help="nbgrader submitted/ layout, or an LMS zip / folder of loose files")
    parser.add_argument("--workspace", default=str(course.HERE),
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
    workspace = course.Workspace(root=Path(args.workspace).resolve())
    from autograde.collect import read_roster
    roster = read_roster(args.roster) if args.roster else None
    results, problems = grade_class(args.assignment, args.submissions, workspace, args.workers, args.scheduler,
                                    limits, progress=not args.quiet, roster=roster, named_regexp=args.named_regexp)
    grades = course.export_grades(workspace)
    chart = workspace.root / f"failures_{args.assignment}.png"
    report.plot_failures(report.failures_by_exercise(results), chart)
    print(report.report(results, problems))
    print(f"\ngrades: {grades}\nfeedback: {workspace.dir('feedback')}/<student>/{args.assignment}/\nchart: {chart}")


if __name__ == "__main__":
    main()
