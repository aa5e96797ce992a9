"""The shared body of every tests/test_mutants_NN_*.py: each graded exercise's own tests must
reject at least three plausible wrong implementations and accept at least one right alternative.

A mutant module defines ASSIGNMENT and EXERCISES = {test_id: Exercise(...)} and calls
``mutant_tests(globals())``, which adds the parametrised tests below to it.
"""
from dataclasses import dataclass, field

import pytest

from conftest import load_exercises

MIN_WRONG, MIN_RIGHT = 3, 1


@dataclass
class Exercise:
    function: str                                # the name the student defines in the notebook
    wrong: dict = field(default_factory=dict)    # label -> implementation the tests must reject
    right: dict = field(default_factory=dict)    # label -> implementation the tests must accept


def mutant_tests(module):
    assignment, exercises = module["ASSIGNMENT"], module["EXERCISES"]
    wrong = [(t, e.function, label, f) for t, e in exercises.items() for label, f in e.wrong.items()]
    right = [(t, e.function, label, f) for t, e in exercises.items() for label, f in e.right.items()]

    def test_every_graded_cell_has_enough_mutants():
        graded = set(load_exercises(assignment).tests)
        assert graded == set(exercises), f"graded test cells {sorted(graded)} vs mutants for {sorted(exercises)}"
        for test_id, exercise in exercises.items():
            assert len(exercise.wrong) >= MIN_WRONG, f"{test_id}: only {len(exercise.wrong)} wrong implementations"
            assert len(exercise.right) >= MIN_RIGHT, f"{test_id}: no correct alternative"

    def test_solution_passes(test_id):
        load_exercises(assignment).run_test(test_id)

    @pytest.mark.parametrize("test_id, function, label, impl", wrong, ids=[f"{w[0]}-{w[2]}" for w in wrong])
    def test_wrong_implementation_is_rejected(test_id, function, label, impl):
        with pytest.raises(AssertionError):
            load_exercises(assignment).run_test(test_id, **{function: impl})

    @pytest.mark.parametrize("test_id, function, label, impl", right, ids=[f"{r[0]}-{r[2]}" for r in right])
    def test_correct_alternative_is_accepted(test_id, function, label, impl):
        load_exercises(assignment).run_test(test_id, **{function: impl})

    module["pytestmark"] = pytest.mark.slow  # runs the solution notebook in-process
    module["test_every_graded_cell_has_enough_mutants"] = test_every_graded_cell_has_enough_mutants
    module["test_solution_passes"] = pytest.mark.parametrize("test_id", list(exercises))(test_solution_passes)
    module["test_wrong_implementation_is_rejected"] = test_wrong_implementation_is_rejected
    module["test_correct_alternative_is_accepted"] = test_correct_alternative_is_accepted
