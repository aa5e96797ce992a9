"""course_lib.softmax against PyTorch in fp64: extreme logits, -inf masks, temperature (notebook 02)."""
import math

import pytest
import torch

from course_lib import softmax
from course_lib.grading import logits_cases

CASES = logits_cases(num_classes=7, rows=5, seed=1, dtype=torch.float64)
IDS = [label for label, _ in CASES]


@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=IDS)
@pytest.mark.parametrize("dim", [-1, 0])
def test_logsumexp_log_softmax_softmax_match_torch(logits, dim):
    torch.testing.assert_close(softmax.logsumexp(logits, dim), torch.logsumexp(logits, dim))
    # dim=0 on the masked case has whole columns of -inf: NaN there, in torch as in ours
    torch.testing.assert_close(softmax.log_softmax(logits, dim), torch.log_softmax(logits, dim), equal_nan=True)
    torch.testing.assert_close(softmax.softmax(logits, dim), torch.softmax(logits, dim), equal_nan=True)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 3.0, 100.0])
def test_temperature_divides_the_logits(temperature):
    x = CASES[0][1]
    torch.testing.assert_close(softmax.softmax(x, temperature=temperature), torch.softmax(x / temperature, -1))
    torch.testing.assert_close(softmax.log_softmax(x, temperature=temperature),
                               torch.log_softmax(x / temperature, -1))


def test_temperature_limits_are_argmax_and_uniform():
    x = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(softmax.softmax(x, temperature=1e-3), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(softmax.softmax(x, temperature=1e6), torch.full((3,), 1 / 3, dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_worked_example():
    # (0.629, 0.231, 0.140) to three places; some texts quote (0.628, 0.231, 0.141), a misrounding.
    got = softmax.softmax(torch.tensor([2.0, 1.0, 0.5]))
    torch.testing.assert_close(got, torch.tensor([0.6285, 0.2312, 0.1402]), atol=5e-5, rtol=0)


def test_float64_logits_are_computed_in_float64_like_torch():
    x = 1e8 + torch.tensor([[0.0, 1.0, 2.0, -1.0], [0.5, 0.0, -3.0, 1.5]], dtype=torch.float64)  # one number in fp32
    for dim in (-1, 0):
        for ours, theirs in [(softmax.softmax, torch.softmax), (softmax.log_softmax, torch.log_softmax),
                             (softmax.logsumexp, torch.logsumexp)]:
            got = ours(x, dim)
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, theirs(x, dim), rtol=0, atol=1e-7)


def test_fully_masked_row_is_minus_inf_and_undefined_like_torch():
    x = torch.full((2, 4), -math.inf, dtype=torch.float64)
    x[0, 1] = 3.0
    assert softmax.logsumexp(x).tolist() == [3.0, -math.inf]
    torch.testing.assert_close(softmax.softmax(x), torch.softmax(x, -1), equal_nan=True)


def test_naive_versions_fail_where_the_stable_ones_do_not():
    big = torch.tensor([1000.0, 999.0, 0.0])
    assert torch.isnan(softmax.naive_softmax(big)).any() and not torch.isnan(softmax.softmax(big)).any()
    assert softmax.naive_logsumexp(big).item() == math.inf
    tiny = torch.tensor([-1000.0, -999.0])
    assert softmax.naive_logsumexp(tiny).item() == -math.inf
    assert softmax.logsumexp(tiny).item() == pytest.approx(-999 + math.log1p(math.exp(-1)))
    assert softmax.naive_log_softmax(torch.tensor([0.0, -200.0]))[1] == -math.inf
    assert softmax.log_softmax(torch.tensor([0.0, -200.0]))[1].item() == pytest.approx(-200.0)


def test_half_precision_inputs_are_computed_in_fp32():
    x = (CASES[1][1]).to(torch.bfloat16)
    got = softmax.logsumexp(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), torch.logsumexp(x.double(), -1))


def test_gradients_through_the_stable_versions():
    x = CASES[0][1].clone().requires_grad_()
    softmax.logsumexp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.softmax(x.detach(), -1))  # d lse / dx = softmax
    assert torch.autograd.gradcheck(lambda t: softmax.log_softmax(t, temperature=0.7), (CASES[0][1].clone().requires_grad_(),))


@pytest.mark.parametrize("temperature, message", [(0, "must be > 0, got 0"), (-1.5, "must be > 0, got -1.5"),
                                                  (float("nan"), "must be a number, got nan"),
                                                  (True, "must be a number, got True"), ("2", "must be a number")])
def test_a_temperature_that_is_not_a_positive_number_is_rejected(temperature, message):
    with pytest.raises(ValueError, match=f"softmax: temperature {message}"):
        softmax.softmax(torch.zeros(3), temperature=temperature)


@pytest.mark.parametrize("call", [
    lambda: softmax.logsumexp(torch.zeros(3), dim=1),
    lambda: softmax.softmax(torch.zeros(2, 3), dim=-3),
    lambda: softmax.log_softmax(torch.zeros(2, 3), dim=2),
])
def test_a_dim_out_of_range_raises_a_value_error_naming_the_shape(call):
    with pytest.raises(ValueError, match=r"out of range for .* of shape .*; expected"):
        call()
