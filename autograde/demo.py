"""`make demo`: the course's whole road on a sample class, offline, with the grader instructors use.

Releases every assignment, hands in a sample class of seven students per assignment
(autograde/sample_class.py: `reference` is the solution notebook, filled into the release), grades
all of them with the batch grader (autograde/batch.py: in parallel, each student's code sandboxed,
on warm kernels) on one pool of workers, exports grades.csv and prints, per assignment, each
student's score with every reason whole, and how long the solution notebook took to grade.
Everything it writes is under build/demo/ (its release too): neither a real class under autograde/
nor notebooks/ (which may hold someone's edits) is touched. The class's slides are `make slides`.

    python -m autograde.demo [ASSIGNMENT ...]      (default: every assignment)
"""
import shutil
import sys
import time
from pathlib import Path

from autograde import batch, course, report, sample_class, sandbox
from autograde.sandbox import Limits

DEMO = course.ROOT / "build" / "demo"


def hand_in(assignments, workspace, folder, students=sample_class.STUDENTS):
    """Release each assignment into the workspace and hand in its sample class (`students` of it) under
    folder/<assignment>/ (nbgrader's submitted layout); returns {assignment: that folder}, what batch.grade takes."""
    classes = {}
    for assignment in assignments:
        course.release(assignment, workspace)
        notebook = f"{assignment}/{assignment}.ipynb"
        classes[assignment] = Path(folder) / assignment
        sample_class.write_class(assignment, course.SOLUTIONS / notebook, workspace.release / notebook,
                                 classes[assignment], students)
    return classes


def main(assignments=None):
    started = time.monotonic()
    workspace = course.Workspace(root=DEMO, release=DEMO / "release")
    assignments = assignments or course.assignments()
    unknown = [a for a in assignments if a not in course.assignments()]
    if unknown:
        sys.exit(f"no assignment named {', '.join(unknown)}; the assignments are: {', '.join(course.assignments())}")
    shutil.rmtree(workspace.root, ignore_errors=True)
    classes = hand_in(assignments, workspace, DEMO / "handed_in")
    print(f"Released {len(assignments)} assignments to {workspace.release.relative_to(course.ROOT)}/ and handed in "
          f"{len(sample_class.STUDENTS)} sample students for each; grading them all with autograde.batch", flush=True)
    # the sample class is the course's own: where this machine cannot box students' code, it is graded unboxed
    problem = sandbox.problem()
    if problem:
        print(f"note: no sandbox here ({problem}); the sample class is graded with limits only", flush=True)
    graded = batch.grade(classes, workspace, limits=Limits(unsafe_no_sandbox=bool(problem)))
    grades = course.export_grades(workspace)
    for assignment, (results, problems) in graded.items():
        print(f"\n== {assignment}\n{report.report(results, problems)}")
    print("\nSolution notebooks (the `reference` student), graded top to bottom:")
    for assignment, (results, _) in graded.items():
        reference = results["reference"]
        got, top = report.score(reference)
        print(f"  {assignment:36s} {reference.get('seconds', 0.0):6.1f} s  {got:g} / {top:g}")
    print(f"\nGrades (nbgrader export): {grades.relative_to(course.ROOT)}"
          f"\nFeedback: {workspace.dir('feedback').relative_to(course.ROOT)}/<student>/<assignment>/"
          f"\nSlides:   make slides (build/slides/ for class, build/answers/ for after the deadline)"
          f"\nThe demo took {time.monotonic() - started:.0f} s.")
    failed = [f"{a}/{student}" for a, (results, _) in graded.items() for student, summary in results.items()
              if any(reason.startswith(batch.GRADER_FAILED) for reason in summary["reasons"])]
    if failed:
        sys.exit(f"the grader itself failed on {', '.join(failed)}: see their reasons above")


if __name__ == "__main__":
    main(sys.argv[1:])
