"""The notebooks as stored: cleared of outputs, with enough graded exercises that follow the course's conventions.
(That each solution notebook runs top to bottom and gets full marks is tests/test_course.py's, from the session's
one grading of every notebook.)"""
from pathlib import Path

import nbformat
import pytest

from autograde import course
from autograde.course import RELEASE, SOLUTIONS, assignments

# at least 5 each; 07 was asked for 4, and 08 (reward models and policy gradients) for 6 policy-gradient exercises
# beside its 2
MIN_EXERCISES = {"07_distillation_and_contrastive": 4, "08_reward_models_and_policy_gradients": 8}
STORED = sorted(SOLUTIONS.glob("*/*.ipynb")) + sorted(RELEASE.glob("*/*.ipynb"))


def test_the_course_has_its_notebooks_so_far():
    assert {"01_mle_and_nll", "02_softmax_and_cross_entropy", "03_information_theory", "04_regularization",
            "05_normalization", "06_language_modeling_loss", "07_distillation_and_contrastive",
            "08_reward_models_and_policy_gradients", "09_dpo_and_its_variants",
            "10_gpu_lab_fused_cross_entropy"} <= set(assignments())


@pytest.mark.parametrize("path", STORED, ids=[str(p.relative_to(p.parents[2])) for p in STORED])
def test_stored_notebooks_have_no_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path} keeps outputs in cells {dirty}: clear them before committing"


@pytest.mark.parametrize("assignment", assignments())
def test_each_notebook_has_enough_graded_exercises_with_points(assignment):
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    tests = [m for m in meta if m.get("grade")]
    solutions = {m["grade_id"] for m in meta if m.get("solution")}
    assert len(tests) >= MIN_EXERCISES.get(assignment, 5) and all(m.get("points", 0) > 0 for m in tests)
    assert {m["grade_id"] for m in tests if not m["grade_id"].endswith(course.COMPILED)} == {
        f"test_{s}" for s in solutions}, "each exercise `foo` is graded by `test_foo`"
    assert {course.exercise_of(m["grade_id"]) for m in tests} == solutions, "test_foo_compiles grades an exercise foo"


@pytest.mark.parametrize("assignment", assignments())
def test_exercises_follow_the_course_conventions(assignment):
    """Solution cell `foo` defines foo(); its test cell `test_foo` checks it through course_lib.grading."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            assert f"def {meta['grade_id']}(" in cell.source, f"solution cell {meta['grade_id']} must define it"
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        if meta.get("grade"):
            assert "grading.check_" in cell.source, f"{meta['grade_id']} must check student code with course_lib.grading"
            assert "### BEGIN HIDDEN TESTS" in cell.source, f"{meta['grade_id']} has no hidden tests"
        if cell.cell_type == "markdown":
            assert "### BEGIN" not in cell.source, "nbgrader reads solution markers in markdown too"


def _free_names(source):
    """Names a cell reads but neither binds nor gets from builtins."""
    import ast
    import builtins
    bound, read = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return {name for name in read - bound if not hasattr(builtins, name)}


@pytest.mark.parametrize("assignment", assignments())
def test_test_cells_need_nothing_from_the_notebook_but_the_students_functions(assignment):
    """The batch grader runs test cells in its own process: they import and build everything they
    use; from the notebook they may only call what the student's solution cells define."""
    import ast
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    defined = {node.name for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("solution")
               for node in ast.parse(cell.source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            borrowed = _free_names(cell.source) - defined
            assert not borrowed, f"{meta['grade_id']} uses {sorted(borrowed)} from earlier cells: import or build them in the test cell"
