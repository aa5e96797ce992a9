"""The course end to end, as `make demo` runs it: every assignment released by nbgrader, its sample students handed in
and graded by the batch grader (the session's `graded_class`, tests/conftest.py, which says who hands in what), the
grades exported; and the README's plain nbgrader commands on one notebook. Nothing is graded in autograde/ or build/."""
import ast
import csv
import html
import re
import shutil

import nbformat
import pytest

import adversarial
from autograde import course, demo, report, sample_class
from autograde.course import RELEASE, SOLUTIONS, assignments
from conftest import WHOLE_CLASS, only_in_blocks

slow = pytest.mark.slow


def _comparable(path):
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = {k: v for k, v in cell.metadata.items()}
        meta["nbgrader"] = {k: v for k, v in meta.get("nbgrader", {}).items() if k != "checksum"}
        cells.append((cell.cell_type, cell.source, meta))
    return cells, nb.metadata.get("kernelspec")


def test_the_demo_asked_for_an_assignment_that_is_not_there_names_those_that_are():
    with pytest.raises(SystemExit, match=r"no assignment named 01_mle_nll; the assignments are: 01_mle_and_nll, 02_"):
        demo.main(["01_mle_nll"])


@pytest.mark.parametrize("assignment", assignments())
def test_release_holds_no_solutions_and_no_hidden_tests(assignment):
    released = nbformat.read(RELEASE / assignment / f"{assignment}.ipynb", as_version=4)
    released_lines = {line.strip() for c in released.cells for line in c.source.splitlines()}
    assert not any(re.search(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)", line) for line in released_lines)
    for block in ("SOLUTION", "HIDDEN TESTS"):
        leaked = sorted(only_in_blocks(assignment, block, shortest=12) & released_lines)
        assert not leaked, f"the release of {assignment} contains {block.lower()} lines: {leaked[:3]}"
    stubs = [c for c in released.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert stubs and all("raise NotImplementedError()" in c.source for c in stubs)


@slow
@pytest.mark.parametrize("assignment", assignments())
def test_committed_release_is_what_nbgrader_generates_from_solutions(graded_class, assignment):
    fresh, committed = (_comparable(d / assignment / f"{assignment}.ipynb")
                        for d in (graded_class.workspace.release, RELEASE))
    assert fresh[1] == committed[1], "kernelspec differs"
    assert len(fresh[0]) == len(committed[0]), f"notebooks/{assignment} is out of date: run `make release`"
    for index, (new, old) in enumerate(zip(*[c[0] for c in (fresh, committed)])):
        assert new == old, f"notebooks/{assignment} cell {index} differs from a fresh release: run `make release`"


@slow
@pytest.mark.parametrize("assignment", assignments())
def test_the_solution_runs_every_cell_and_gets_full_marks(graded_class, assignment):
    reference = graded_class.results[assignment]["reference"]
    got, top = report.score(reference)
    assert (got, reference["reasons"]) == (top, []) and top >= 5, reference
    errors = [(index, output.get("ename"), output.get("evalue")) for index, cell in
              enumerate(graded_class.autograded("reference", assignment).cells) if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"cells of the solution notebook raised when graded: {errors[:3]}"
    assert "Exercise 1: <code>" in graded_class.feedback("reference", assignment)
    print(f"{assignment}: graded top to bottom in {reference['seconds']:.1f} s")  # -rA shows it; budget 90 s


@slow
@pytest.mark.parametrize("assignment", assignments())
def test_the_untouched_release_scores_zero_and_each_test_says_what_to_write(graded_class, assignment):
    untouched = graded_class.results[assignment]["untouched"]
    assert report.score(untouched)[0] == 0 and not untouched["reasons"], untouched
    for cell in graded_class.autograded("untouched", assignment).cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert len(errors) == 1 and "is not written yet" in errors[0].evalue, (meta["grade_id"], errors)


@slow
@pytest.mark.parametrize("assignment", assignments())
def test_a_first_exercise_that_raises_leaves_the_others_their_points(graded_class, assignment):
    """The first solution cell raises before it defines anything: its exercise scores 0; an exercise whose solution
    calls what it defines may lose its points too (02's gradient uses the softmax, 07's objective the KD loss; 09's
    test of dpo_step lends it the course's log-probs), and every other exercise keeps its full marks: no test or demo
    cell leans on the first exercise."""
    raises = graded_class.results[assignment]["raises"]
    solutions = [c for c in nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4).cells
                 if c.metadata.get("nbgrader", {}).get("solution")]
    missing = {node.name for node in ast.parse(solutions[0].source).body
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    leaning = {c.metadata.nbgrader["grade_id"] for c in solutions[1:]
               if missing & {n.id for n in ast.walk(ast.parse(c.source)) if isinstance(n, ast.Name)}}
    first = solutions[0].metadata.nbgrader["grade_id"]  # its test cells (test_foo, test_foo_compiles) score 0
    got = {g["cell"]: g["auto_score"] for g in raises["grades"] if course.exercise_of(g["cell"]) not in leaning}
    assert got == {g["cell"]: 0.0 if course.exercise_of(g["cell"]) == first else g["max_score"]
                   for g in raises["grades"] if course.exercise_of(g["cell"]) not in leaning}, raises
    assert not raises["reasons"], raises
    assert "a bug in my first solution cell" in graded_class.feedback("raises", assignment)


@slow
def test_broken_submissions_get_an_honest_score_and_a_plain_reason(graded_class):
    results = graded_class.results[WHOLE_CLASS]
    top = report.score(results["reference"])[1]
    partial = lambda student: 0 < report.score(results[student])[0] < top  # noqa: E731

    broken = results["broken_json"]
    assert report.score(broken)[0] == 0 and "not valid notebook JSON" in broken["reasons"][0], broken
    assert "not valid notebook JSON" in graded_class.feedback("broken_json", WHOLE_CLASS, "problems.html")

    killed = results["kills_kernel"]
    assert partial("kills_kernel") and "killed its Python process" in killed["reasons"][0], killed
    summary, detail = graded_class.feedback("kills_kernel", WHOLE_CLASS, "problems.html").split("<details>")
    assert "Python process stopped while it ran" in summary and "Traceback" not in summary  # one plain sentence
    assert "killed its Python process" in detail  # the detail, folded

    deleted = results["deleted_cells"]
    assert partial("deleted_cells") and "was deleted" in deleted["reasons"][0] and deleted["flagged"], deleted
    assert "was missing from the submission" in graded_class.feedback("deleted_cells", WHOLE_CLASS)
    assert partial("partly_wrong") and not results["partly_wrong"]["reasons"], results["partly_wrong"]
    page = graded_class.feedback("partly_wrong", WHOLE_CLASS)
    assert "Exercise 1: <code>" in page and ">Test cell<" not in page


@slow
def test_the_exported_grades_are_every_students_score(graded_class):
    with open(course.export_grades(graded_class.workspace), newline="") as handle:
        exported = {(row["assignment"], row["student_id"]): (float(row["score"]), float(row["max_score"]))
                    for row in csv.DictReader(handle)}
    graded = {(a, s): report.score(summary) for a, results in graded_class.results.items()
              for s, summary in results.items()}
    assert {key: exported.get(key) for key in graded} == graded
    # nbgrader exports every student of the gradebook for every assignment: zero where nothing was handed in
    students = {s for _, s in graded}
    unsubmitted = {(a, s) for a in assignments() for s in students} - set(graded)
    assert unsubmitted and {key: exported.get(key, (None,))[0] for key in unsubmitted} == dict.fromkeys(unsubmitted, 0)


@slow
def test_the_readmes_plain_nbgrader_commands_grade_one_notebook(tmp_path):
    """What the README gives an instructor who wants nbgrader alone: generate_assignment, autograde,
    generate_feedback, export, from autograde/ (Workspace.nbgrader points the same commands at a scratch folder)."""
    assignment = "01_mle_and_nll"
    workspace = course.Workspace(root=tmp_path / "course", release=tmp_path / "release")
    notebook = f"{assignment}/{assignment}.ipynb"
    done = workspace.nbgrader("generate_assignment", assignment, "--force")
    assert done.returncode == 0, done.stderr[-2000:]
    handed = sample_class.write_class(assignment, SOLUTIONS / notebook, workspace.release / notebook, tmp_path / "in",
                                      students=("reference", "untouched"))
    for student in ("reference", "untouched"):
        shutil.copytree(handed[student].parent.parent, workspace.dir("submitted") / student)
    for step in (["autograde", assignment], ["generate_feedback", assignment],
                 ["export", f"--CsvExportPlugin.to={tmp_path / 'grades.csv'}"]):
        done = workspace.nbgrader(*step)
        assert done.returncode == 0, (step, done.stderr[-2000:])
    with open(tmp_path / "grades.csv", newline="") as handle:
        rows = {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(handle)}
    assert rows["reference"][0] == rows["reference"][1] >= 5 and rows["untouched"][0] == 0, rows
    assert (workspace.dir("feedback") / "reference" / assignment / f"{assignment}.html").exists()


@slow
def test_the_gpu_lab_adversary_loses_what_it_cheated_and_keeps_the_rest(graded_class):
    """Graded by the batch grader: the budget exercise answered by the course's reference scores 0; each kernel only
    the interpreter takes keeps its exercise's points (its values are right) and loses its compile point, which the
    grader's own process decided; every other exercise gets its honest full marks."""
    got = graded_class.results[adversarial.GPU_LAB]["lab_adversary"]
    scored = {g["cell"]: g["auto_score"] for g in got["grades"]}
    full = {g["cell"]: g["max_score"] for g in got["grades"]}
    lost = {f"test_{adversarial.CHUNK_EXERCISE}"} | {f"test_{e}{course.COMPILED}" for e in adversarial.INTERPRETER_ONLY}
    assert {cell: scored[cell] for cell in lost} == dict.fromkeys(lost, 0.0), got
    assert {c: s for c, s in scored.items() if c not in lost} == {c: full[c] for c in scored if c not in lost}, got
    assert full[f"test_online_logsumexp{course.COMPILED}"] == 1 and sum(full.values()) == 22, full
    page = html.unescape(re.sub(r"<[^>]+>", "", graded_class.feedback("lab_adversary", adversarial.GPU_LAB)))
    assert "rejects for sm_90" in page and "unsupported AST node type: Break" in page, "the compiler's own words"
    assert "raised OutOfBounds: ce_forward_kernel loaded 1 element(s)" in page and "before the start of" in page
