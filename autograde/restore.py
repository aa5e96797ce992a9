"""Put back what a student changed in the assignment's own cells before nbgrader reads the notebook.

nbgrader restores a test cell's source and type from the gradebook and re-adds a deleted one; the nbgrader
metadata it trusts (grade, solution, locked, points, grade_id) is restored here, and every change becomes a
reason the student reads.
"""
import re
from pathlib import Path

import nbformat


def tests_of(notebook):
    """The test cells: graded cells that are not also answers (those are graded by hand)."""
    return {c.name for c in notebook.grade_cells} - {c.name for c in notebook.solution_cells}


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
            tests = tests_of(notebook)
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
