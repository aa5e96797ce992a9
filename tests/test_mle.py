"""course_lib.mle against PyTorch in fp64, on ordinary and extreme inputs (notebook 01)."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import mle

REDUCTIONS = ["none", "sum", "mean"]
g = torch.Generator().manual_seed(0)
PROBS = torch.cat([torch.rand(20, generator=g, dtype=torch.float64), torch.tensor([0.0, 1.0, 1e-12, 1 - 1e-12])])
LABELS = torch.cat([torch.randint(0, 2, (20,), generator=g).double(), torch.tensor([1.0, 0.0, 1.0, 0.0])])
LOGITS = torch.cat([torch.randn(20, generator=g, dtype=torch.float64) * 5, torch.tensor([1e4, -1e4, 100.0, -100.0])])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_torch_including_p_equal_0_and_1(reduction):
    got = mle.binary_cross_entropy(PROBS, LABELS, reduction=reduction)
    torch.testing.assert_close(got, F.binary_cross_entropy(PROBS, LABELS, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch_at_extreme_logits(reduction):
    got = mle.binary_cross_entropy_with_logits(LOGITS, LABELS, reduction=reduction)
    want = F.binary_cross_entropy_with_logits(LOGITS, LABELS, reduction=reduction)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_bce_with_logits_gradient_is_sigmoid_minus_target_everywhere_including_zero():
    z = torch.cat([LOGITS, torch.zeros(2, dtype=torch.float64)]).requires_grad_()
    y = torch.cat([LABELS, torch.tensor([0.0, 1.0], dtype=torch.float64)])
    mle.binary_cross_entropy_with_logits(z, y, reduction="sum").backward()
    torch.testing.assert_close(z.grad, torch.sigmoid(z.detach()) - y)


def test_bce_from_logits_equals_bce_from_probabilities_where_both_are_exact():
    z = torch.linspace(-8, 8, 33, dtype=torch.float64)
    y = (torch.arange(33) % 2).double()
    torch.testing.assert_close(mle.binary_cross_entropy_with_logits(z, y, "none"),
                               mle.binary_cross_entropy(torch.sigmoid(z), y, "none"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_fp32(dtype):
    got = mle.binary_cross_entropy_with_logits(LOGITS[:20].to(dtype), LABELS[:20].to(dtype))
    assert got.dtype == torch.float32
    want = F.binary_cross_entropy_with_logits(LOGITS[:20].to(dtype).double(), LABELS[:20])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_worked_examples():
    assert mle.binary_cross_entropy(torch.tensor(0.8), torch.tensor(1.0)).item() == pytest.approx(0.223, abs=5e-4)
    assert mle.binary_cross_entropy(torch.tensor(0.3), torch.tensor(0.0)).item() == pytest.approx(0.357, abs=5e-4)
    assert mle.mse(torch.tensor([0.5, 0.5, 2.5]), torch.tensor([1.0, 0.0, 2.0])).item() == pytest.approx(0.25)
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.70, 0.10, 0.10], [0.05, 0.9, 0.05]])
    losses = mle.categorical_nll(probs, torch.tensor([1, 2, 0]), reduction="none")
    torch.testing.assert_close(losses, torch.tensor([0.357, 2.303, 2.996]), atol=5e-4, rtol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_categorical_nll_is_nll_loss_of_log_probabilities(reduction):
    probs = torch.softmax(torch.randn(8, 5, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 5, (8,), generator=g)
    torch.testing.assert_close(mle.categorical_nll(probs, y, reduction=reduction),
                               F.nll_loss(probs.log(), y, reduction=reduction))


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_nll_matches_torch(full, reduction):
    mean, target = torch.randn(2, 10, generator=g, dtype=torch.float64)
    var = torch.rand(10, generator=g, dtype=torch.float64) + 1e-8  # includes tiny variances: eps clamp
    var[0] = 0.0
    got = mle.gaussian_nll(mean, target, var, full=full, reduction=reduction)
    torch.testing.assert_close(got, F.gaussian_nll_loss(mean, target, var, full=full, reduction=reduction))


def test_gaussian_nll_with_fixed_variance_is_scaled_mse_plus_constant():
    mean, target = torch.randn(2, 10, generator=g, dtype=torch.float64)
    sigma2 = 0.3
    nll = mle.gaussian_nll(mean, target, torch.full((10,), sigma2, dtype=torch.float64), full=True)
    const = 0.5 * math.log(2 * math.pi * sigma2)
    torch.testing.assert_close(nll, mle.mse(mean, target) / (2 * sigma2) + const)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction):
    a, b = torch.randn(2, 4, 3, generator=g, dtype=torch.float64) * 1e3
    torch.testing.assert_close(mle.mse(a, b, reduction=reduction), F.mse_loss(a, b, reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_elements_give_an_empty_loss_a_zero_sum_and_a_nan_mean_like_torch(reduction):
    empty, var = torch.zeros(2, 0, dtype=torch.float64), torch.ones(2, 0, dtype=torch.float64)
    no_rows, no_targets = torch.zeros(0, 5, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    pairs = [(mle.binary_cross_entropy(empty, empty, reduction),
              F.binary_cross_entropy(empty, empty, reduction=reduction)),
             (mle.binary_cross_entropy_with_logits(empty, empty, reduction),
              F.binary_cross_entropy_with_logits(empty, empty, reduction=reduction)),
             (mle.mse(empty, empty, reduction), F.mse_loss(empty, empty, reduction=reduction)),
             (mle.gaussian_nll(empty, empty, var, reduction=reduction),
              F.gaussian_nll_loss(empty, empty, var, reduction=reduction)),
             (mle.categorical_nll(no_rows, no_targets, reduction),
              F.nll_loss(no_rows, no_targets, reduction=reduction))]
    for got, want in pairs:
        torch.testing.assert_close(got, want, equal_nan=True)


def test_int32_targets_per_column_variances_and_close_large_values_match_torch():
    probs = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 5, (6,), generator=g)
    # torch takes int64 targets only; the course takes any integer dtype
    torch.testing.assert_close(mle.categorical_nll(probs, y.int(), "none"),
                               F.nll_loss(probs.log(), y, reduction="none"))
    mean, target = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    var = torch.rand(3, generator=g, dtype=torch.float64) + 0.1  # one per column: torch takes it expanded
    torch.testing.assert_close(mle.gaussian_nll(mean, target, var, reduction="none"),
                               F.gaussian_nll_loss(mean, target, var.expand(4, 3), reduction="none"))
    huge = 1e20 * (1 + torch.rand(3, 4, generator=g, dtype=torch.float64))
    close = huge * (1 + 1e-6 * torch.randn(3, 4, generator=g, dtype=torch.float64))
    torch.testing.assert_close(mle.mse(huge.float(), close.float(), "none").double(),
                               F.mse_loss(huge.float().double(), close.float().double(), reduction="none"), rtol=1e-6,
                               atol=0)


@pytest.mark.parametrize("call, message", [
    (lambda: mle.binary_cross_entropy(torch.rand(3), torch.rand(2)), r"same shape.*\(3,\).*\(2,\)"),
    (lambda: mle.mse(torch.arange(3), torch.arange(3)), "floating tensor"),
    (lambda: mle.categorical_nll(torch.rand(4, 3), torch.rand(4)), "integer tensor"),
    (lambda: mle.categorical_nll(torch.rand(4, 3), torch.zeros(3, dtype=torch.long)), r"probs \(N, C\) and targets \(N,\)"),
    (lambda: mle.mse(torch.rand(3), torch.rand(3), reduction="avg"), "reduction must be one of"),
    (lambda: mle.mse([1.0], torch.rand(1)), "must be a torch.Tensor"),
    (lambda: mle.gaussian_nll(torch.zeros(3), torch.zeros(3), torch.ones(2)), r"var of shape \(2,\) must broadcast"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
