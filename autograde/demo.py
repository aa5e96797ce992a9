"""`make demo`: the whole road on a sample class, offline.

Executes every solution notebook (timed), releases every assignment, hands in a sample class
(autograde/sample_class.py), autogrades it with nbgrader, writes feedback, exports grades.csv and
prints the grade table (the class's slides are `make slides`). Everything it writes is under
build/: it grades in its own workspace, build/demo/, and releases into build/demo/release/, so
neither a real class under autograde/ nor notebooks/ (which may hold someone's edits) is touched.

    python -m autograde.demo [ASSIGNMENT ...]      (default: every assignment)
"""
import shutil
import sys

from autograde import pipeline, sample_class

BUILD = pipeline.ROOT / "build"


def main(assignments=None):
    workspace = pipeline.Workspace(root=BUILD / "demo", release=BUILD / "demo" / "release")
    shutil.rmtree(workspace.root, ignore_errors=True)
    results, times = [], {}
    for assignment in assignments or pipeline.assignments():
        print(f"== {assignment}: executing the solutions", flush=True)
        _, times[assignment] = pipeline.execute_solution(assignment)

        print(f"== {assignment}: releasing to {workspace.release.relative_to(pipeline.ROOT)}/ and handing in the "
              f"sample class", flush=True)
        pipeline.release(assignment, workspace)
        notebook = f"{assignment}/{assignment}.ipynb"
        students = sample_class.write_class(assignment, pipeline.SOLUTIONS / notebook, workspace.release / notebook,
                                            BUILD / "sample_class" / assignment)
        for student, path in students.items():
            pipeline.submit(student, assignment, path, workspace)
            print(f"   autograding {student}", flush=True)
            results.append(pipeline.autograde(student, assignment, workspace))

    grades = pipeline.export_grades(workspace)
    print("\nSolution notebooks, executed top to bottom:")
    for assignment, seconds in times.items():
        print(f"  {assignment:36s} {seconds:6.1f} s")
    print(f"\nGrades (nbgrader export: {grades.relative_to(pipeline.ROOT)})\n")
    print(pipeline.grade_table(results))
    print(f"\nFeedback: {(workspace.root / 'feedback').relative_to(pipeline.ROOT)}/<student>/<assignment>/"
          f"\nSlides:   make slides (build/slides/ for class, build/answers/ for after the deadline)")


if __name__ == "__main__":
    main(sys.argv[1:])
