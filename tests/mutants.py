"""The shared body of every tests/test_mutants_NN_*.py: each graded exercise's own tests must
reject at least three plausible wrong implementations and accept at least one right alternative.

A mutant module defines ASSIGNMENT and EXERCISES = {test_id: Exercise(...)} and calls
``mutant_tests(globals())``, which adds the parametrised tests below to it.
"""
import types
from dataclasses import dataclass, field

import pytest
import torch

from conftest import load_exercises
from course_lib import grading

MIN_WRONG, MIN_RIGHT = 3, 1
# functions whose docstring allows "a float (or 0-d tensor)"
NUMBER_ALLOWED = {"06_language_modeling_loss": {"perplexity_from_batch_losses"}}
# answers of the wrong kind, which every function exercise's test cell must turn into a failed check (an AssertionError
# with a message), never into a crash inside the test's own code (a TypeError or AttributeError from its helpers)
WRONG_KINDS = {
    "returns None (a missing return)": lambda *args, **kwargs: None,
    "returns a string": lambda *args, **kwargs: "not a tensor",
    "returns an empty tuple": lambda *args, **kwargs: (),
    "returns a Python float": lambda *args, **kwargs: 0.5,
    "returns a 0-d tensor": lambda *args, **kwargs: torch.tensor(0.5),
    "returns a (3, 3, 3) tensor": lambda *args, **kwargs: torch.full((3, 3, 3), 0.5),
    "returns an integer tensor": lambda *args, **kwargs: torch.ones(2, dtype=torch.long),
    "returns a pair of None": lambda *args, **kwargs: (None, None),
}


@dataclass
class Exercise:
    function: str                                # the name the student defines in the notebook
    wrong: dict = field(default_factory=dict)    # label -> implementation the tests must reject
    right: dict = field(default_factory=dict)    # label -> implementation the tests must accept
    differentiable: bool = False                 # a loss a model is trained through: its gradients are graded


# ---------------------------------------------------------------- pieces mutants are written with (elementary torch)

def upcast(x):
    """float16/bfloat16 to float32; float32 and float64 as they are (the course's rule for every loss)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def reduce(loss, reduction):
    """'none', 'sum', or else the mean."""
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def neg_log_sigmoid(t):
    """-log sigmoid(t), stable: one smooth branch per sign, selected, each fed t on its own side (so the gradient is
    right at t = 0 too, and the branch not taken cannot overflow)."""
    up = t >= 0
    t_pos, t_neg = torch.where(up, t, 0.0), torch.where(up, 0.0, t)
    return torch.where(up, torch.log1p(torch.exp(-t_pos)), -t_neg + torch.log1p(torch.exp(t_neg)))


def neg_log_sigmoid_clamped(t):
    """-log sigmoid(t) as clamp(-t, min=0) + log1p(exp(-|t|)): right values, but autograd's gradient at t = 0 is -1,
    not -1/2 (it differentiates the clamp and |t| apart at their shared kink): the mutants' wrong form."""
    return torch.clamp(-t, min=0) + torch.log1p(torch.exp(-t.abs()))


def _plain_solution(notebook, function):
    """The notebook's own `function`, which a mutant wraps; the test is skipped where it is a class or a kernel."""
    solution = notebook.namespace.get(function)
    if not isinstance(solution, types.FunctionType):
        pytest.skip(f"{function} is not a plain function (a class or a kernel)")
    return solution


def _as_float(text):
    """Whether nbgrader would read `text`, a cell's shown value, as a score (it tries float() on it)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def mutant_tests(module):
    assignment, exercises = module["ASSIGNMENT"], module["EXERCISES"]
    wrong = [(t, e.function, label, f) for t, e in exercises.items() for label, f in e.wrong.items()]
    right = [(t, e.function, label, f) for t, e in exercises.items() for label, f in e.right.items()]

    def test_every_graded_cell_has_enough_mutants():
        cells = load_exercises(assignment).tests
        assert set(cells) == set(exercises), f"graded test cells {sorted(cells)} vs mutants for {sorted(exercises)}"
        for test_id, exercise in exercises.items():
            assert len(exercise.wrong) >= MIN_WRONG, f"{test_id}: only {len(exercise.wrong)} wrong implementations"
            assert len(exercise.right) >= MIN_RIGHT, f"{test_id}: no correct alternative"
            # a loss said to be differentiable has its gradients graded (proved by the half-gradient mutant), and
            # a test cell that grades gradients says so here, so that mutant is run against it
            graded_gradients = "gradients=" in cells[test_id]
            assert graded_gradients == exercise.differentiable, \
                f"{test_id}: differentiable={exercise.differentiable}, but gradients graded: {graded_gradients}"

    def test_solution_passes(test_id):
        shown = load_exercises(assignment).run_test(test_id)
        # nbgrader reads a number a graded cell shows as its partial credit (and fails the cell if it is above the
        # cell's points): a helper that returns a number must not be a cell's last line
        assert shown is None or not _as_float(repr(shown)), (
            f"{test_id} ends by showing {shown!r}: nbgrader would take it for partial credit")

    @pytest.mark.parametrize("test_id, function, label, impl", wrong, ids=[f"{w[0]}-{w[2]}" for w in wrong])
    def test_wrong_implementation_is_rejected(test_id, function, label, impl):
        with pytest.raises(AssertionError):
            load_exercises(assignment).run_test(test_id, **{function: impl})

    kinds = [(t, e.function, kind) for t, e in exercises.items() for kind in WRONG_KINDS]

    @pytest.mark.parametrize("test_id, function, kind", kinds, ids=[f"{k[0]}-{k[2]}" for k in kinds])
    def test_an_answer_of_the_wrong_kind_fails_a_check_and_does_not_crash_the_test(test_id, function, kind):
        notebook = load_exercises(assignment)
        _plain_solution(notebook, function)  # a class or a kernel cannot return a wrong kind
        with pytest.raises(AssertionError) as failed:
            notebook.run_test(test_id, **{function: WRONG_KINDS[kind]})
        # the stand-in only returns: a "your code raised" means the test's own code crashed on what came back
        assert not isinstance(failed.value, grading.StudentRaised), f"the test cell crashed on it:\n{failed.value}"

    @pytest.mark.parametrize("test_id, function", [(t, e.function) for t, e in exercises.items()], ids=list(exercises))
    def test_the_right_answer_that_then_zeroes_its_input_is_rejected(test_id, function):
        """A function that changes what it is given (a norm layer that corrupts the residual stream) is wrong whatever
        it returns: the solution, then its first floating tensor input zeroed in place."""
        notebook = load_exercises(assignment)
        solution, zeroed = _plain_solution(notebook, function), []

        def zeroes_its_input(*args, **kwargs):
            result = solution(*args, **kwargs)
            floating = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_floating_point()]
            if floating and kwargs.get("inplace") is not True:
                with torch.no_grad():
                    floating[0].zero_()
                zeroed.append(True)
            return result

        try:
            notebook.run_test(test_id, **{function: zeroes_its_input})
        except AssertionError as failed:
            assert "in place" in str(failed), f"rejected, but not for changing its input:\n{failed}"
            return
        assert not zeroed, f"{test_id} accepts a {function} that zeroes its input after computing the right answer"
        pytest.skip(f"{function} is given no floating tensor in its test cell")

    @pytest.mark.parametrize("test_id, function", [(t, e.function) for t, e in exercises.items()], ids=list(exercises))
    def test_the_right_answer_as_a_python_number_is_rejected_where_a_tensor_is_promised(test_id, function):
        """.item() of the right 0-d tensor: the value is right, but a caller cannot backpropagate through it or keep
        it on its device. Rejected wherever the reference returns a tensor (some docstrings allow a float)."""
        notebook = load_exercises(assignment)
        solution, converted = _plain_solution(notebook, function), []

        def as_a_number(*args, **kwargs):
            result = solution(*args, **kwargs)
            if isinstance(result, torch.Tensor) and result.dim() == 0:
                converted.append(True)
                return result.item()
            return result

        try:
            notebook.run_test(test_id, **{function: as_a_number})
        except AssertionError as failed:
            assert "a tensor" in str(failed) or "autograd graph" in str(failed), f"rejected, but why?\n{failed}"
            return
        if converted:
            assert NUMBER_ALLOWED.get(assignment, set()) >= {function}, f"{test_id} accepts a Python number"
        pytest.skip(f"{function} returns no 0-d tensor in its test cell, or may return a float")

    @pytest.mark.parametrize("test_id, function", [(t, e.function) for t, e in exercises.items()], ids=list(exercises))
    def test_the_right_answer_that_needs_contiguous_memory_is_rejected(test_id, function):
        """The solution, after `.view(-1)` of every tensor input of two or more rows: right on a fresh tensor, a crash
        on a slice of a batch or the first V columns of a padded buffer. Every test cell that gives such tensors must
        also give them as non-contiguous views (the helpers do, see grading._check_on_wider_rows)."""
        notebook = load_exercises(assignment)
        solution, rows, strided = _plain_solution(notebook, function), [], []

        def flattens_with_view(*args, **kwargs):
            for a in (*args, *kwargs.values()):
                if isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[-2] >= 2:
                    rows.append(True)
                    strided.append(not a.is_contiguous())
                    a.view(-1)  # raises where the memory is not contiguous, as it would inside a solution
            return solution(*args, **kwargs)

        try:
            notebook.run_test(test_id, **{function: flattens_with_view})
        except AssertionError as failed:
            assert any(strided) and "view" in str(failed), f"rejected, but not for its layout:\n{failed}"
            return
        assert not rows, f"{test_id} gives {function} tensors of several rows, but never one that is not contiguous"
        pytest.skip(f"{function} is given no tensor of two or more rows in its test cell")

    differentiable = [(t, e.function) for t, e in exercises.items() if e.differentiable]

    @pytest.mark.parametrize("test_id, function", differentiable, ids=[d[0] for d in differentiable])
    def test_the_right_values_with_half_the_gradient_are_rejected(test_id, function):
        """A loss whose values are right but whose gradient is not (half of it computed from detached inputs, as
        when a branch is .detach()ed by mistake) trains the wrong model: its test cell must check gradients."""
        notebook = load_exercises(assignment)
        solution = notebook.namespace[function]

        def half_detached(*args, **kwargs):
            detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
            both = solution(*args, **kwargs), solution(*detached, **{k: v.detach() if isinstance(v, torch.Tensor)
                                                                     else v for k, v in kwargs.items()})
            if isinstance(both[0], torch.Tensor):
                return (both[0] + both[1]) / 2
            return type(both[0])((a + b) / 2 if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                                 for a, b in zip(*both))

        with pytest.raises(AssertionError) as failed:
            notebook.run_test(test_id, **{function: half_detached})
        assert "gradient" in str(failed.value), f"rejected, but not for its gradient:\n{failed.value}"

    @pytest.mark.parametrize("test_id, function, label, impl", right, ids=[f"{r[0]}-{r[2]}" for r in right])
    def test_correct_alternative_is_accepted(test_id, function, label, impl):
        load_exercises(assignment).run_test(test_id, **{function: impl})

    module["pytestmark"] = pytest.mark.slow  # runs the solution notebook in-process
    module["test_every_graded_cell_has_enough_mutants"] = test_every_graded_cell_has_enough_mutants
    module["test_solution_passes"] = pytest.mark.parametrize("test_id", list(exercises))(test_solution_passes)
    module["test_wrong_implementation_is_rejected"] = test_wrong_implementation_is_rejected
    module["test_correct_alternative_is_accepted"] = test_correct_alternative_is_accepted
    module["test_the_right_answer_that_then_zeroes_its_input_is_rejected"] = \
        test_the_right_answer_that_then_zeroes_its_input_is_rejected
    module["test_an_answer_of_the_wrong_kind_fails_a_check_and_does_not_crash_the_test"] = \
        test_an_answer_of_the_wrong_kind_fails_a_check_and_does_not_crash_the_test
    module["test_the_right_answer_that_needs_contiguous_memory_is_rejected"] = \
        test_the_right_answer_that_needs_contiguous_memory_is_rejected
    module["test_the_right_values_with_half_the_gradient_are_rejected"] = \
        test_the_right_values_with_half_the_gradient_are_rejected
    module["test_the_right_answer_as_a_python_number_is_rejected_where_a_tensor_is_promised"] = \
        test_the_right_answer_as_a_python_number_is_rejected_where_a_tensor_is_promised
