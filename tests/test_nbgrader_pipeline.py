"""The road a class travels, with real nbgrader: release, hand in, autograde, feedback, export.

Everything is graded in a temporary workspace, never in autograde/ or build/.
"""
import re

import nbformat
import pytest

from autograde import pipeline, sample_class
from autograde.pipeline import RELEASE, SOLUTIONS, assignments

pytestmark = pytest.mark.slow
ROBUSTNESS_ASSIGNMENT = "01_mle_and_nll"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    workspace = pipeline.Workspace(root=root, release=root / "release")
    for assignment in assignments():
        pipeline.release(assignment, workspace)
    return workspace


@pytest.fixture(scope="module")
def sample(workspace, tmp_path_factory):
    """The sample class's notebooks for every assignment, built from the fresh release."""
    folder = tmp_path_factory.mktemp("students")
    return {a: sample_class.write_class(a, SOLUTIONS / a / f"{a}.ipynb", workspace.release / a / f"{a}.ipynb",
                                        folder / a) for a in assignments()}


def _comparable(path):
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = {k: v for k, v in cell.metadata.items()}
        meta["nbgrader"] = {k: v for k, v in meta.get("nbgrader", {}).items() if k != "checksum"}
        cells.append((cell.cell_type, cell.source, meta))
    return cells, nb.metadata.get("kernelspec")


@pytest.mark.parametrize("assignment", assignments())
def test_committed_release_is_what_nbgrader_generates_from_solutions(workspace, assignment):
    fresh, committed = (_comparable(d / assignment / f"{assignment}.ipynb") for d in (workspace.release, RELEASE))
    assert fresh[1] == committed[1], "kernelspec differs"
    assert len(fresh[0]) == len(committed[0]), f"notebooks/{assignment} is out of date: run `make release`"
    for index, (new, old) in enumerate(zip(*[c[0] for c in (fresh, committed)])):
        assert new == old, f"notebooks/{assignment} cell {index} differs from a fresh release: run `make release`"


@pytest.mark.parametrize("assignment", assignments())
def test_release_holds_no_solutions_and_no_hidden_tests(assignment):
    released = nbformat.read(RELEASE / assignment / f"{assignment}.ipynb", as_version=4)
    source = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    released_lines = {line.strip() for c in released.cells for line in c.source.splitlines()}
    assert not any(re.search(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)", line) for line in released_lines)
    for block in ("SOLUTION", "HIDDEN TESTS"):
        secret = rf"### BEGIN {block}\n(.*?)### END {block}"
        public = {line.strip() for c in source.cells for line in re.sub(secret, "", c.source, flags=re.S).splitlines()}
        for cell in source.cells:
            for body in re.findall(secret, cell.source, re.S):
                lines = {line.strip() for line in body.splitlines() if len(line.strip()) > 12} - public
                leaked = sorted(lines & released_lines)
                assert not leaked, f"the release of {assignment} contains {block.lower()} lines: {leaked[:3]}"
    stubs = [c for c in released.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert stubs and all("raise NotImplementedError()" in c.source for c in stubs)


@pytest.mark.parametrize("assignment", assignments())
def test_reference_solution_gets_full_marks_and_blank_release_gets_zero(workspace, sample, assignment):
    for student in ("reference", "untouched"):
        pipeline.submit(student, assignment, sample[assignment][student], workspace)
    full = pipeline.autograde("reference", assignment, workspace)
    blank = pipeline.autograde("untouched", assignment, workspace)
    assert (full.verdict, full.problems) == ("full marks", []), full
    assert full.max_score >= 5
    assert (blank.score, blank.verdict) == (0, "zero"), blank
    assert (workspace.dir("feedback") / "reference" / assignment / f"{assignment}.html").exists()


def test_broken_submissions_get_clear_feedback_and_never_disturb_the_class(workspace, sample):
    assignment = ROBUSTNESS_ASSIGNMENT
    students = ("broken_json", "kills_kernel", "deleted_cells", "raises", "partly_wrong")
    for student in students:
        pipeline.submit(student, assignment, sample[assignment][student], workspace)
    pipeline.submit("after_the_broken_ones", assignment, sample[assignment]["reference"], workspace)
    results = {s: pipeline.autograde(s, assignment, workspace) for s in students + ("after_the_broken_ones",)}

    broken = results["broken_json"]
    assert broken.verdict == "not graded" and "not valid notebook JSON" in broken.problems[0]
    problems = workspace.dir("feedback") / "broken_json" / assignment / "problems.html"
    assert "not valid notebook JSON" in problems.read_text()

    killed = results["kills_kernel"]
    assert killed.verdict == "not graded" and "kernel died" in killed.problems[0]
    page = (workspace.dir("feedback") / "kills_kernel" / assignment / "problems.html").read_text()
    summary, detail = page.split("<details>")
    assert "Python process stopped while it ran" in summary and "Traceback" not in summary  # one plain sentence
    assert "kernel died" in detail  # the technical detail, folded

    for student in ("deleted_cells", "raises", "partly_wrong"):
        result = results[student]
        assert result.verdict == "partial" and not result.problems, result
    feedback = lambda s: (workspace.dir("feedback") / s / assignment / f"{assignment}.html").read_text()  # noqa: E731
    assert "was missing from the submission" in feedback("deleted_cells")
    assert "Exercise 1: <code>" in feedback("partly_wrong") and ">Test cell<" not in feedback("partly_wrong")
    assert "a bug in my first solution cell" in feedback("raises")

    assert results["after_the_broken_ones"].verdict == "full marks"
    rows = {r["student_id"]: r for r in pipeline.read_grades_csv(pipeline.export_grades(workspace))
            if r["assignment"] == assignment}
    assert float(rows["broken_json"]["score"]) == 0
    assert float(rows["after_the_broken_ones"]["score"]) == float(rows["after_the_broken_ones"]["max_score"])
