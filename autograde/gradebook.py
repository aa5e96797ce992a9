"""The class gradebook: the assignment a job grades against, each outcome merged in one transaction, and the
done-markers that let a killed batch resume.

Only the batch process writes here. After a merge a marker (the submission's sha256 and its outcome summary) is
written atomically; a student merged but not yet marked is graded again and merged again, replacing the rows.
"""
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import asdict
from pathlib import Path

from autograde import course


def template_gradebook(workspace, assignment):
    """The class gradebook's copy of one assignment, without students: what each job grades against."""
    from nbgrader.api import Gradebook, MissingEntry
    workspace.root.mkdir(parents=True, exist_ok=True)
    course.new_gradebooks_in_process()
    with Gradebook(workspace.db_url) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry:
            course.release(assignment, workspace)
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
            timestamp = utils.parse_utc(outcome.timestamp) if outcome.timestamp else None
            submission = SubmittedAssignment(assignment=assignment, student=gb.find_student(outcome.student),
                                             timestamp=timestamp)
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
        course.write_problem_feedback(workspace, outcome.student, outcome.assignment, outcome.reasons)


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


def finished(workspace, job):
    """The outcome summary of this exact submission if it was merged and marked, else None."""
    path = marker_path(workspace, job.assignment, job.student)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("digest") == job.digest:
            return saved
    return None


def summary(outcome):
    """What the class keeps of an outcome once its files are merged: a plain dict (JSON), the marker's content."""
    return {k: v for k, v in asdict(outcome).items() if k not in ("autograded", "feedback")}


def mark(workspace, outcome):
    """The done-marker of a merged outcome, written atomically: whole or absent."""
    path = marker_path(workspace, outcome.assignment, outcome.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(summary(outcome), indent=1))
    os.replace(temporary, path)
