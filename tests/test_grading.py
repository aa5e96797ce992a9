"""course_lib.grading: what the notebook test cells rely on to reject wrong answers clearly."""
import math

import pytest
import torch
import torch._dynamo  # noqa: F401  torch.func imports it on first use: here, not under the recorder's hook (seconds)
import torch.nn.functional as F

from course_lib import grading, softmax as ref
from course_lib.grading import FromScratchViolation, from_scratch

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 3])
lse_alias = torch.logsumexp
from torch.nn.functional import log_softmax as renamed_log_softmax  # noqa: E402


def stable_lse(x, dim=-1):
    m = x.amax(dim, keepdim=True)
    return (m + (x - m).exp().sum(dim, keepdim=True).log()).squeeze(dim)


def swallowed_violation(x):
    try:
        return torch.logsumexp(x, -1)
    except Exception:
        return None


@pytest.mark.parametrize("call", [
    lambda: torch.logsumexp(X, -1),
    lambda: lse_alias(X, -1),
    lambda: X.logsumexp(-1),
    lambda: torch.special.logsumexp(X, -1),
    lambda: renamed_log_softmax(X, -1),
    lambda: torch.nn.LogSoftmax(-1)(X),
    lambda: F.cross_entropy(X, Y),
    lambda: torch.nn.CrossEntropyLoss()(X, Y),
    lambda: ref.logsumexp(X),
    lambda: swallowed_violation(X),
    lambda: torch.ops.aten.logsumexp.default(X, [-1]),
    lambda: torch.ops.aten._log_softmax.default(X, -1, False),
    lambda: torch.ops.aten.cross_entropy_loss.default(X, Y),
    lambda: torch.distributions.Categorical(logits=X).log_prob(Y),
], ids=["torch", "alias", "method", "special", "renamed import", "module", "F.cross_entropy",
        "CrossEntropyLoss", "course_lib reference", "caught by the student", "aten op", "aten internal op",
        "aten composite op", "inside torch.distributions"])
def test_from_scratch_catches_every_route_to_a_forbidden_op(call):
    with pytest.raises(FromScratchViolation, match="must be written from scratch, but it called"):
        with from_scratch("logsumexp", "log_softmax", "cross_entropy", exercise="logsumexp"):
            call()


def _leaf():
    return X.clone().requires_grad_()


@pytest.mark.parametrize("forbidden, call", [
    ("sigmoid", lambda: torch.special.expit(X)),
    ("sigmoid", lambda: torch.ops.aten.sigmoid.default(X)),
    ("exp", lambda: X.clone().exp_()),
    ("nll_loss", lambda: torch.ops.aten.nll_loss_forward.default(X, Y, None, 1, -100)),
    ("grad", lambda: (lambda x: torch.autograd.grad(x.exp().sum(), x))(_leaf())),
    ("backward", lambda: torch.autograd.Variable._execution_engine.run_backward(  # autograd's engine itself
        (_leaf().exp().sum(),), (torch.ones(()),), False, False, (), True, True)),
    ("backward", lambda: torch.autograd.backward(_leaf().exp().sum())),
    ("backward", lambda: torch.func.grad(lambda x: x.exp().sum())(X)),
    ("grad", lambda: torch.autograd.functional.vjp(lambda x: x.exp().sum(), X)),
], ids=["special.expit", "aten sigmoid", "in place", "aten nll_loss_forward", "autograd.grad", "autograd engine",
        "autograd.backward", "func.grad", "autograd.functional.vjp"])
def test_from_scratch_matches_the_operation_not_the_name(forbidden, call):
    with pytest.raises(FromScratchViolation, match="must be written from scratch"):
        with from_scratch(forbidden):
            call()


def _in_a_thread():
    import threading
    worker = threading.Thread(target=lambda: torch.logsumexp(X, -1))
    worker.start()
    worker.join()


def _with_modes_off():
    from torch.utils._python_dispatch import _disable_current_modes
    with _disable_current_modes():
        torch.ops.aten.logsumexp.default(X, [-1])


def _profile_off():
    import sys
    sys.setprofile(None)
    torch.logsumexp(X, -1)


@pytest.mark.parametrize("call, used", [
    (_in_a_thread, "a new thread"),
    (_with_modes_off, "torch's mode stack"),
    (_profile_off, "sys.setprofile"),
    (lambda: __import__("subprocess").run(["true"]), "a new process"),
], ids=["thread", "modes off", "profile off", "subprocess"])
def test_from_scratch_refuses_code_run_out_of_its_sight(call, used):
    with pytest.raises(FromScratchViolation, match=f"must run where the from-scratch check can see it.*{used}"):
        with from_scratch("logsumexp"):
            call()


def test_from_scratch_does_not_see_forbidden_ops_in_what_is_allowed():
    with from_scratch("logsumexp", "nll_loss"):  # F.cross_entropy would dispatch to nll_loss
        stable_lse(X).sum()
    with from_scratch("logsumexp"):  # a call that is allowed is not blamed for what it dispatches to
        F.cross_entropy(X, Y)
        (X * 2).sum()


def test_from_scratch_names_the_forbidden_call():
    with pytest.raises(FromScratchViolation, match=r"called Tensor\.logsumexp"):
        with from_scratch("logsumexp"):
            X.logsumexp(-1)


def test_from_scratch_allows_elementary_operations_and_restores_the_profiler():
    with from_scratch("logsumexp", "log_softmax", "cross_entropy"):
        stable_lse(X)
    assert torch.overrides._get_current_function_mode() is None
    import sys
    assert sys.getprofile() is None


def test_from_scratch_catches_a_forbidden_python_function_by_identity():
    alias = stable_lse
    with pytest.raises(FromScratchViolation, match="stable_lse"):
        with from_scratch(stable_lse):
            alias(X)


def test_check_against_reference_passes_a_right_answer_and_explains_a_wrong_one():
    cases = [("ordinary", (X,)), ("extreme", (X * 1e4,))]
    grading.check_against_reference(stable_lse, ref.logsumexp, cases, forbidden=("logsumexp",))
    naive = lambda x, dim=-1: x.exp().sum(dim).log()  # noqa: E731
    with pytest.raises(AssertionError) as failure:
        grading.check_against_reference(naive, ref.logsumexp, cases, name="logsumexp", hint="subtract the max")
    message = str(failure.value)
    for part in ("logsumexp(tensor(shape=(4, 6)", "[case: extreme]", "returned:", "expected:",
                 "hint: subtract the max"):
        assert part in message


def test_a_student_function_that_changes_its_input_is_rejected_and_cannot_change_the_callers():
    def destructive(x, dim=-1):
        result = stable_lse(x, dim)
        x.zero_()
        return result

    def unchanged_values(x, dim=-1):  # an in-place op that leaves the values: the version counter sees it
        x.mul_(1.0)
        return stable_lse(x, dim)

    x = X.clone()
    for student in (destructive, unchanged_values):
        with pytest.raises(grading.CheckFailed, match=r"changed its input argument 1 in place"):
            grading.check_against_reference(student, ref.logsumexp, [("ordinary", (x,))])
        with pytest.raises(grading.CheckFailed, match=r"changed its input dim|changed its input argument 1"):
            grading.check_example(student, (x,), ref.logsumexp(X), kwargs={"dim": -1})
    assert torch.equal(x, X)
    grading.check_against_reference(stable_lse, ref.logsumexp, [("nan and -inf are left as they are", (
        torch.tensor([[math.nan, 0.0], [-math.inf, 1.0]]),))], atol=1e-6)  # nan == nan, for this check


class _WrongBackward(torch.autograd.Function):
    """logsumexp with the right value and a backward that forgets the upstream gradient (returns softmax alone)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return stable_lse(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.softmax(x, -1)


GRADIENT_CASES = [("ordinary", (X,)), ("x by keyword", (), {"x": X}), ("extreme: values only", (X * 1e4,))]


@pytest.mark.parametrize("student, says", [
    (lambda x, dim=-1: stable_lse(x.detach(), dim), "with no autograd graph"),
    (lambda x, dim=-1: (stable_lse(x, dim) + stable_lse(x.detach(), dim)) / 2, "[gradient of argument 1"),
    (lambda x, dim=-1: _WrongBackward.apply(x), "[gradient of argument 1"),  # ignores the upstream gradient
    (lambda x, dim=-1: stable_lse(x.detach(), dim).requires_grad_(), "no gradient: your result does not depend"),
])
def test_a_loss_with_right_values_and_a_wrong_gradient_is_rejected(student, says):
    with pytest.raises(grading.CheckFailed) as failed:
        grading.check_against_reference(student, ref.logsumexp, GRADIENT_CASES, gradients=("x",), name="logsumexp")
    assert says in str(failed.value), failed.value


def test_a_right_gradient_is_accepted_and_the_edges_of_the_domain_are_checked_on_values_only():
    grading.check_against_reference(stable_lse, ref.logsumexp, GRADIENT_CASES, gradients=("x",))
    grading.check_against_reference(lambda x, dim=-1: stable_lse(x.double(), dim).float(), ref.logsumexp,
                                    [("bfloat16", (X.bfloat16(),))], rtol=1e-2, atol=1e-2, gradients=("x",))

    # where correct implementations may disagree on the gradient (a -inf entry, a saturated softmax), only values
    half = lambda x, dim=-1: (stable_lse(x, dim) + stable_lse(x.detach(), dim)) / 2  # noqa: E731
    edges = [("masked", (X.masked_fill(X < -0.5, -math.inf),)), ("extreme", (X * 1e4,)), ("a zero", (X * 0,))]
    grading.check_against_reference(half, ref.logsumexp, edges, gradients=("x",))


def test_a_gradient_is_checked_at_zero_inputs_where_the_exercise_says_the_loss_is_smooth_there():
    def clamped(z):  # right values; autograd's slope at z = 0 is 1 - 1/2 = 1/2 from the clamp, where sigma(0) = 1/2
        return z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))

    def by_abs(z):  # the same values, max(z, 0) as (z + |z|) / 2: slope 1/2 at 0
        return (z + z.abs()) / 2 + torch.log1p(torch.exp(-z.abs()))

    softplus = lambda z: F.softplus(z)  # noqa: E731
    zeros = [("logits of exactly 0", (torch.tensor([0.0, 1.5, -2.0, 0.0]),))]
    grading.check_against_reference(clamped, softplus, zeros, gradients=("z",))  # zeros skipped: a kink may be there
    grading.check_against_reference(by_abs, softplus, zeros, gradients=("z",), differentiable_at_zero=True)
    with pytest.raises(grading.CheckFailed, match=r"gradient of argument 1.*\n(.*\n)*.*for this case: z = 0 is smooth"):
        grading.check_against_reference(clamped, softplus, zeros, gradients=("z",), differentiable_at_zero=True,
                                        hint="z = 0 is smooth")


def test_empty_inputs_are_compared_by_shape_and_their_gradients_not_checked():
    empty = [("no rows", (torch.zeros(0, 4),))]
    grading.check_against_reference(stable_lse, ref.logsumexp, empty, gradients=("x",))
    with pytest.raises(grading.CheckFailed, match=r"shape \(\) but expected shape \(0,\)"):
        grading.check_against_reference(lambda x, dim=-1: stable_lse(x, dim).sum(), ref.logsumexp, empty)
    assert grading.describe(torch.zeros(0, 5)) == "tensor(shape=(0, 5), dtype=float32, no elements)"


def test_the_result_dtype_is_the_references_on_the_same_inputs_or_float64():
    def half_in_half(x, dim=-1):  # right values to 1e-2, but a float16 loss for float16 logits
        return stable_lse(x.float(), dim).to(x.dtype)

    def in_float64(x, dim=-1):
        return stable_lse(x.double(), dim)

    half = [("float16 logits", (X.half(),))]
    grading.check_against_reference(in_float64, ref.logsumexp, half + [("float32", (X,))])
    with pytest.raises(grading.CheckFailed, match=r"dtype float16\n  expected: a float32 result"):
        grading.check_against_reference(half_in_half, ref.logsumexp, half, rtol=1e-2, atol=1e-2)
    with pytest.raises(grading.CheckFailed, match=r"dtype float64\n  expected: a float32 result"):
        grading.check_against_reference(in_float64, ref.logsumexp, [("float32", (X,))], same_dtype=True)


def test_check_raises_accepts_the_promised_error_and_names_anything_else():
    def checks(x, placement="pre"):
        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', got {placement!r}")
        return x

    grading.check_raises(checks, torch.ones(2), placement="middle")
    for wrong, says in ((lambda x, placement="pre": {"pre": x, "post": x}[placement], "raised KeyError: 'middle'"),
                        (lambda x, placement="pre": x, "returned a result")):
        with pytest.raises(grading.CheckFailed) as failed:
            grading.check_raises(wrong, torch.ones(2), placement="middle", name="residual_block", hint="check first")
        assert str(failed.value).splitlines() == [
            "residual_block(tensor([1., 1.], dtype=float32), placement='middle')", f"  {says}",
            "  expected: a ValueError", "  hint: check first"]
    with pytest.raises(grading.NotWritten):
        grading.check_raises(stub, torch.ones(2))


def test_check_peak_memory_counts_what_the_call_creates_and_names_the_call_when_it_is_too_much():
    x = torch.ones(1000)  # made before: not counted
    grading.check_peak_memory(lambda: (x * 2).sum(), call="f(x)", allowed=4096)   # 4004 bytes: within
    with pytest.raises(grading.CheckFailed, match="4004 bytes created"):
        grading.check_peak_memory(lambda: (x * 2).sum(), call="f(x)", allowed=4003)
    with pytest.raises(grading.CheckFailed) as failed:
        grading.check_peak_memory(lambda: torch.ones(10_000).sum(), call="f(x)", allowed=4096, unit=(4000, "x"),
                                  hint="free what you no longer need")  # 40000 bytes of ones, 4 of their sum
    assert str(failed.value).splitlines() == [
        "f(x)", "  returned: 40004 bytes created and alive at its peak (10.00 x x)", "  expected: at most 4096 bytes",
        "  hint: free what you no longer need"]
    with pytest.raises(grading.StudentRaised, match=r"f\(x\)\n  raised IndexError"):
        grading.check_peak_memory(lambda: x[2000], call="f(x)", allowed=4096)


def test_a_mismatch_is_printed_with_the_digits_that_tell_the_numbers_apart():
    with pytest.raises(grading.CheckFailed, match=r"got 100000001, expected 100000000 "):
        grading.check_close(torch.tensor(1e8 + 1, dtype=torch.float64), torch.tensor(1e8, dtype=torch.float64),
                            call="f(x)", rtol=0, atol=1e-6)
    described = grading.describe(torch.tensor([1.0, math.inf, math.nan, -math.inf] * 3))
    assert described.endswith("contains -inf, +inf, nan)"), described


def test_every_case_is_also_given_as_views_of_wider_rows():
    def by_memory(x, dim=-1):  # right on contiguous rows only: it reads the storage as if rows were x.shape[-1] long
        flat = torch.as_strided(x, (x.numel(),), (1,))
        return stable_lse(flat.reshape(x.shape), dim)

    def views(x, dim=-1):
        return stable_lse(x.view(-1).reshape(x.shape), dim)  # .view(-1) needs contiguous memory

    grading.check_against_reference(stable_lse, ref.logsumexp, [("ordinary", (X,))])
    for wrong, says in ((by_memory, "first mismatch"), (views, "raised RuntimeError: view size is not compatible")):
        with pytest.raises(grading.CheckFailed) as failed:
            grading.check_against_reference(wrong, ref.logsumexp, [("ordinary", (X,))], name="logsumexp")
        assert "[the same inputs as views of wider rows" in str(failed.value) and says in str(failed.value)
    wider = grading._padded_rows(X)
    assert wider.stride() == (X.shape[1] + 1, 1) and torch.equal(wider, X)
    copy = grading._clone(wider)  # what the student's function is given: the same layout, a gap of nan
    assert copy.stride() == wider.stride() and torch.equal(copy, X) and copy.untyped_storage().nbytes() > X.nbytes


def test_check_same_memory_accepts_the_tensor_itself_and_rejects_a_copy():
    x = torch.zeros(3, 4)
    grading.check_same_memory(x, x, call="f(x, inplace=True)")
    grading.check_same_memory(x.view(3, 4), x, call="f(x, inplace=True)")  # a view of all of it is the same memory
    for wrong, says in ((x.clone(), "in other memory"), (x[:2], "in other memory"), (None, "None (NoneType)")):
        with pytest.raises(grading.CheckFailed, match=r"expected: the tensor it was given") as failed:
            grading.check_same_memory(wrong, x, call="f(x, inplace=True)")
        assert says in str(failed.value)


@pytest.mark.parametrize("returned, detail", [
    (None, "forget to `return`"),
    (torch.zeros(3), "shape (3,) but expected shape ()"),
    (torch.tensor(1), "expected a floating result"),
    ("0.5", "should be a tensor or a number"),
    (torch.tensor(0.5001), "first mismatch"),
])
def test_check_close_says_what_is_wrong(returned, detail):
    with pytest.raises(AssertionError, match="returned") as failure:
        grading.check_close(returned, 0.5, call="f(x)", atol=1e-6)
    assert detail in str(failure.value)


def test_check_close_compares_several_outputs_one_by_one():
    expected = (torch.tensor([1.0, 2.0]), torch.tensor(3.0))
    grading.check_close([torch.tensor([1.0, 2.0]), 3.0], expected, call="f(x)")
    for returned, detail in [(torch.tensor([1.0, 2.0]), "several outputs"),
                             ((torch.tensor([1.0, 2.0]),), "1 outputs"),
                             ((torch.tensor([1.0, 2.0]), torch.tensor(3.5)), "[output 1]")]:
        with pytest.raises(AssertionError) as failure:
            grading.check_close(returned, expected, call="f(x)")
        assert detail in str(failure.value)


def test_check_close_treats_nan_as_equal_only_to_nan():
    grading.check_close(torch.tensor(float("nan")), float("nan"), call="f()")
    with pytest.raises(AssertionError):
        grading.check_close(torch.tensor(0.0), float("nan"), call="f()")


@pytest.mark.parametrize("value, options, says", [
    (None, {}, "returned: None (NoneType)"),
    (0.5, {}, "returned: 0.5 (float)"),
    ((torch.ones(2),), {"outputs": 2}, "returned: 1 outputs"),
    ("loss", {"outputs": 2}, "returned: 'loss' (str)"),
    ((torch.ones(2), None), {"outputs": 2}, "returned: None"),
    (torch.ones(2), {"differentiable": True}, "shape (2,), dtype float32 with no autograd graph"),
])
def test_returned_turns_a_wrong_kind_of_result_into_a_failed_check(value, options, says):
    with pytest.raises(grading.CheckFailed, match=r"f\(x\)\n  returned: ") as failed:
        grading.returned(value, call="f(x)", **options)
    assert says in str(failed.value) and "expected: " in str(failed.value)


def test_returned_hands_back_a_right_result_and_calls_no_torch_function():
    x = torch.ones(3, requires_grad=True) * 2
    pair = (x, x.detach())
    with from_scratch(*(name for name in dir(torch.Tensor) if not name.startswith("_")), exercise="f"):
        assert grading.returned(x, call="f", differentiable=True) is x
        assert grading.returned(pair, call="f", outputs=2) is pair
        with pytest.raises(grading.CheckFailed):
            grading.returned(pair[1], call="f", differentiable=True)


def test_check_frequencies_accepts_fair_draws_and_rejects_biased_or_impossible_ones():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0])
    draws = torch.multinomial(p, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    grading.check_frequencies(torch.bincount(draws, minlength=4), p, call="sample()")
    for counts, outlier in [([10600, 5400, 4000, 0], "category 0"),   # 8.5 sd too many
                            ([10000, 6000, 3999, 1], "category 3")]:  # a probability-0 token drawn once
        with pytest.raises(AssertionError) as failure:
            grading.check_frequencies(torch.tensor(counts), p, call="sample()", hint="divide by T")
        assert outlier in str(failure.value) and "hint: divide by T" in str(failure.value)


def test_check_example_enforces_from_scratch_rules():
    with pytest.raises(FromScratchViolation):
        grading.check_example(lambda x: torch.logsumexp(x, -1), (X[0],), ref.logsumexp(X[0]), forbidden=("logsumexp",))


def test_check_gradient_rejects_y_minus_p():
    def loss(z, y):
        return F.cross_entropy(z, y, reduction="sum")
    right = lambda z, y: torch.softmax(z, -1) - F.one_hot(y, z.shape[-1])  # noqa: E731
    wrong = lambda z, y: F.one_hot(y, z.shape[-1]) - torch.softmax(z, -1)  # noqa: E731
    grading.check_gradient(right, loss, [("ordinary", (X, Y))])
    with pytest.raises(AssertionError, match="case: ordinary"):
        grading.check_gradient(wrong, loss, [("ordinary", (X, Y))])


class WrongBackwardSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x  # should be 2x


def test_check_gradcheck_rejects_a_wrong_backward():
    grading.check_gradcheck(lambda x: x * x, torch.randn(5))
    with pytest.raises(AssertionError, match="finite differences"):
        grading.check_gradcheck(WrongBackwardSquare.apply, torch.randn(5))


def test_logits_cases_cover_the_extremes():
    labels = [label for label, _ in grading.logits_cases()]
    assert any("1e4" in label for label in labels) and any("-inf" in label for label in labels)
    masked = dict(grading.logits_cases())["masked logits (-inf entries)"]
    targets = grading.random_targets(masked, seed=1)
    assert torch.isfinite(masked.gather(1, targets[:, None])).all()  # never a masked class as target


def test_reference_runs_in_float64_and_input_scale_sizes_the_rounding_allowance():
    seen = []

    def reference(x, temperature=1.0):
        seen.append(x.dtype)
        return ref.log_softmax(x, temperature=temperature)

    def float32_log_softmax(x, temperature=1.0):  # correct, in float32
        z = x / temperature
        return z - stable_lse(z)[..., None]

    case = ("two nearly tied logits of 1e4, T=0.3", (torch.tensor([[1e4, 1e4 + 0.5, -1e4]]),), {"temperature": 0.3})
    assert grading.input_scale(case) == pytest.approx((1e4 + 0.5) / 0.3)
    with pytest.raises(AssertionError, match="first mismatch"):  # float32 rounding at 1e4 exceeds atol=1e-6 ...
        grading.check_against_reference(float32_log_softmax, reference, [case], atol=1e-6)
    grading.check_against_reference(float32_log_softmax, reference, [case], atol=grading.float32_rounding(case))
    assert grading.float32_rounding(case) == pytest.approx(2 * 2 ** -23 * (1e4 + 0.5) / 0.3)
    # the values come from float64 copies (twice); the dtype the result must have, from the inputs as given (once: the
    # first call failed before it)
    assert seen == [torch.float64, torch.float64, torch.float32]


def test_random_distributions_are_valid_with_the_asked_for_zeros():
    p = grading.random_distributions((50, 8), seed=0, zeros=0.3, dim=-1)
    assert torch.allclose(p.sum(-1), torch.ones(50)) and (p >= 0).all()
    assert 0.15 < (p == 0).double().mean() < 0.35
    assert torch.equal(p, grading.random_distributions((50, 8), seed=0, zeros=0.3))
    q = grading.random_distributions((4, 6, 3), seed=1, dim=1, dtype=torch.float64)
    assert q.dtype == torch.float64 and torch.allclose(q.sum(1), torch.ones(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dyadic_distributions_sum_to_exactly_one_in_half_precision(dtype):
    p = grading.dyadic_distributions(5, seed=0, dtype=dtype)
    assert p.dtype == dtype and (p.float().sum(-1) == 1).all() and ((p.float() * 64) % 1 == 0).all()


# ---------------------------------------------------------------- messages first

def stub(x):
    """What the release hands out."""
    # YOUR CODE HERE
    raise NotImplementedError()


def written_but_calls_a_stub(x):
    return stub(x) + 1


def raises_inside(x):
    return x[10]


def test_a_failed_check_renders_as_its_message_alone():
    with pytest.raises(grading.CheckFailed) as failure:
        grading.check_example(lambda x: x * 2, (torch.tensor([1.0]),), torch.tensor([3.0]), name="triple",
                              hint="multiply by three")
    lines = failure.value._render_traceback_()
    assert lines[0].startswith("triple(tensor([1.]")
    assert any("hint: multiply by three" in line for line in lines)
    assert not any("grading.py" in line or "Traceback" in line for line in lines)


def test_an_unwritten_exercise_is_one_line_naming_it():
    with pytest.raises(grading.NotWritten) as failure:
        grading.check_example(stub, (torch.tensor([1.0]),), torch.tensor([1.0]))
    assert failure.value._render_traceback_() == ["`stub` is not written yet: fill in the cell above"]
    with pytest.raises(grading.NotWritten, match=r"`stub` is not written yet \(`written_but_calls_a_stub` calls it\)"):
        grading.check_against_reference(written_but_calls_a_stub, lambda x: x, [("one", (torch.ones(2),))])
    with pytest.raises(grading.NotWritten, match="`stub` is not written yet"):
        grading.check_gradcheck(stub, torch.ones(2))


def test_a_students_exception_is_a_failed_check_with_the_students_frames_only():
    with pytest.raises(grading.StudentRaised) as failure:
        grading.check_example(raises_inside, (torch.ones(3),), torch.ones(1), name="raises_inside")
    text = "\n".join(failure.value._render_traceback_())
    assert text.startswith("raises_inside(tensor([1., 1., 1.]")
    assert "raised IndexError: index 10 is out of bounds" in text
    assert "in raises_inside" in text and "return x[10]" in text
    assert "course_lib/grading.py" not in text and "contextlib" not in text
    with pytest.raises(grading.StudentRaised) as failure:
        grading.check_example(raises_inside, (torch.ones(3),), torch.ones(1), hint="index within the shape")
    assert str(failure.value).splitlines()[-1] == "  hint: index within the shape"


def test_call_hands_back_the_students_result_and_turns_what_goes_wrong_into_a_failed_check():
    x = torch.randn(4, 3).t()  # not contiguous: the student is given the same layout
    assert grading.call(lambda t, scale=1.0: (t.is_contiguous(), t * scale), x, scale=2.0)[0] is False
    assert torch.equal(grading.call(lambda t, scale=1.0: t * scale, x, scale=2.0), 2 * x)
    with pytest.raises(grading.NotWritten, match="`stub` is not written yet"):
        grading.call(stub, x)
    with pytest.raises(grading.StudentRaised, match="raised RuntimeError: view size is not compatible"):
        grading.call(lambda t: t.view(-1), x, name="flatten")
    with pytest.raises(grading.CheckFailed, match="changed its input argument 1 in place"):
        grading.call(lambda t: t.mul_(2), x)
    with pytest.raises(grading.FromScratchViolation):
        grading.call(lambda t: torch.softmax(t, -1), x, forbidden=("softmax",))


def test_written_names_the_first_exercise_to_write(capsys):
    assert grading.written(raises_inside, stable_lse)
    assert not grading.written(stable_lse, stub, exercise="Exercise 3")
    assert capsys.readouterr().out == "skipped until you write Exercise 3, `stub`\n"
    assert not grading.written(written_but_calls_a_stub, exercise="Exercise 4")
    assert capsys.readouterr().out == "skipped until you write `stub`\n"


def test_written_follows_globals_not_attributes():
    def uses_torch_softmax(x):
        return torch.softmax(x, -1)  # `softmax` is an attribute here, not the (unwritten) global of that name
    namespace = {"torch": torch, "softmax": stub}
    uses = type(uses_torch_softmax)(uses_torch_softmax.__code__, namespace, "uses_torch_softmax")
    assert grading.is_stub(uses) is None


def test_a_demonstration_trains_briefly_only_while_nbgrader_grades(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert grading.demo_steps(1500, graded=100) == 1500
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # what nbgrader's Execute sets in the kernel it grades with
    assert grading.demo_steps(1500, graded=100) == 100


def test_student_side_modules_may_be_called_from_scratch_and_references_may_not():
    from course_lib import markov
    with from_scratch(exercise="demo"):
        markov.MarkovSource(vocab_size=3, order=1, seed=0).sample(2, 4, seed=0)
    with pytest.raises(FromScratchViolation, match="course_lib.softmax.log_softmax"):
        with from_scratch(exercise="demo"):
            ref.log_softmax(X)


class HalfWritten(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        """What the release hands out."""
        raise NotImplementedError()


def wraps_a_function_class(x):
    return HalfWritten.apply(x)


def test_written_follows_a_class_defined_beside_the_function(capsys):
    assert grading.is_stub(wraps_a_function_class) == "HalfWritten.backward"
    assert not grading.written(wraps_a_function_class, exercise="Exercise 4")
    assert capsys.readouterr().out == "skipped until you write `HalfWritten.backward`\n"
