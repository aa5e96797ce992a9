"""course_lib.cross_entropy against F.cross_entropy in fp64 (notebook 02)."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import cross_entropy as ce
from course_lib.grading import logits_cases, random_targets

CASES = logits_cases(num_classes=6, rows=8, seed=2, dtype=torch.float64)
IDS = [label for label, _ in CASES]
OPTIONS = list(itertools.product(["none", "sum", "mean"], [0.0, 0.1]))


@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=IDS)
@pytest.mark.parametrize("reduction, label_smoothing", OPTIONS)
def test_matches_f_cross_entropy(logits, reduction, label_smoothing):
    targets = random_targets(logits, seed=3, ignore_index=-100, ignore_fraction=0.3)
    got = ce.cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)
    want = F.cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)
    torch.testing.assert_close(got, want, equal_nan=True)


def test_sequence_shaped_logits_and_a_custom_ignore_index():
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    targets = torch.randint(0, 11, (3, 5))
    targets[0, 3:] = 0  # padding id 0
    got = ce.cross_entropy(logits, targets, ignore_index=0)
    torch.testing.assert_close(got, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=0))
    assert ce.cross_entropy(logits, targets, ignore_index=0, reduction="none").shape == (3, 5)


def test_all_targets_ignored_gives_nan_mean_and_zero_sum_like_torch():
    logits, targets = torch.randn(4, 3, dtype=torch.float64), torch.full((4,), -100)
    assert math.isnan(ce.cross_entropy(logits, targets).item())
    assert math.isnan(F.cross_entropy(logits, targets).item())
    assert ce.cross_entropy(logits, targets, reduction="sum").item() == 0.0


@pytest.mark.parametrize("reduction, label_smoothing", [("mean", 0.0), ("sum", 0.0), ("mean", 0.2), ("sum", 0.1)])
def test_analytic_gradient_is_softmax_minus_target(reduction, label_smoothing):
    logits = CASES[0][1] * 3
    targets = random_targets(logits, seed=4, ignore_index=-100, ignore_fraction=0.25)
    x = logits.clone().requires_grad_()
    F.cross_entropy(x, targets, reduction=reduction, label_smoothing=label_smoothing).backward()
    torch.testing.assert_close(ce.cross_entropy_grad(logits, targets, reduction=reduction,
                                                     label_smoothing=label_smoothing), x.grad)


def test_worked_examples():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.02, 0.9, 0.08]])  # softmax(log p) = p
    got = ce.cross_entropy(probs.log(), torch.tensor([1, 0]), reduction="none")
    torch.testing.assert_close(got, torch.tensor([0.357, 3.912]), atol=5e-4, rtol=0)
    sentence = torch.tensor([0.02, 0.15, 0.40, 0.60])
    logits = torch.stack([sentence.log(), (1 - sentence).log()], dim=-1)
    assert ce.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(1.81, abs=5e-3)


def test_token_mean_and_sequence_mean_disagree_on_ragged_sequences():
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    targets = torch.randint(0, 5, (2, 4))
    targets[1, 1:] = -100  # the second sequence has one real token
    per_seq = ce.per_sequence_cross_entropy(logits, targets)
    per_token = F.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1), reduction="none").reshape(2, 4)
    torch.testing.assert_close(per_seq, torch.stack([per_token[0].mean(), per_token[1, 0]]))
    assert not torch.isclose(per_seq.mean(), ce.cross_entropy(logits, targets))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_is_cross_entropy_weighted_by_one_minus_pt_to_the_gamma(gamma):
    logits = CASES[1][1]
    targets = random_targets(logits, seed=5, ignore_index=-100, ignore_fraction=0.25)
    nll = F.cross_entropy(logits, targets, reduction="none")
    keep = targets != -100
    want = ((1 - torch.exp(-nll)) ** gamma * nll)[keep].mean()
    torch.testing.assert_close(ce.focal_loss(logits, targets, gamma=gamma), want)
    if gamma == 0.0:
        torch.testing.assert_close(ce.focal_loss(logits, targets, gamma=0.0), F.cross_entropy(logits, targets))


def test_an_ignored_row_whose_logits_are_not_finite_changes_nothing():
    """Ignored rows are selected out, not multiplied by zero: an ignored row may hold -inf at its target, or nan."""
    logits = CASES[0][1].clone()
    targets = random_targets(logits, seed=7)
    targets[1] = targets[4] = -100
    logits[1, targets[0]] = -math.inf  # what the row holds at any class: -inf
    logits[1, 0] = -math.inf
    logits[4] = math.nan  # and a row of nan
    clean = logits.clone()
    clean[1], clean[4] = 0.0, 0.0
    keep = targets != -100
    for gamma in (0.0, 2.0):
        x = logits.clone().requires_grad_()
        got = ce.focal_loss(x, targets, gamma=gamma, reduction="none")
        torch.testing.assert_close(got, ce.focal_loss(clean, targets, gamma=gamma, reduction="none"))
        assert (got[~keep] == 0).all()
        got.sum().backward()
        # the gradient of an ignored row of nan is nan through softmax whatever a loss does; the -inf row is finite
        assert torch.isfinite(x.grad[1]).all() and (x.grad[1] == 0).all()
    for reduction in ("mean", "sum"):
        got = ce.cross_entropy_grad(logits, targets, reduction=reduction)
        torch.testing.assert_close(got, ce.cross_entropy_grad(clean, targets, reduction=reduction))
        assert (got[~keep] == 0).all()


def test_an_ignored_position_whose_logits_are_not_finite_adds_no_loss():
    logits = CASES[0][1].clone()
    targets = random_targets(logits, seed=8, ignore_index=-100, ignore_fraction=0.0)
    targets[1] = targets[4] = targets[5] = -100
    logits[1, 0], logits[4], logits[5] = -math.inf, -math.inf, math.nan
    for reduction, label_smoothing in OPTIONS:
        got = ce.cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)
        keep = targets != -100
        want = F.cross_entropy(logits[keep], targets[keep], reduction=reduction, label_smoothing=label_smoothing)
        if reduction == "none":
            assert (got[~keep] == 0).all()
            got = got[keep]
        torch.testing.assert_close(got, want)
    got = ce.per_sequence_cross_entropy(logits.reshape(2, 4, 6), targets.reshape(2, 4))
    want = [F.cross_entropy(logits[:4][keep[:4]], targets[:4][keep[:4]]),
            F.cross_entropy(logits[4:][keep[4:]], targets[4:][keep[4:]])]
    torch.testing.assert_close(got, torch.stack(want))


def test_float64_logits_int32_targets_and_no_kept_position_like_torch():
    g = torch.Generator().manual_seed(9)
    logits = 1e8 + 2 * torch.randn(5, 6, generator=g, dtype=torch.float64)  # one number in float32; fp64 ulp 1.5e-8
    targets = torch.tensor([0, 5, -100, 2, 3])
    for reduction, label_smoothing in OPTIONS:
        want = F.cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)
        # torch takes int64 targets only; the course takes any integer dtype
        for y in (targets, targets.int()):
            got = ce.cross_entropy(logits, y, reduction=reduction, label_smoothing=label_smoothing)
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)
    for reduction in ("mean", "sum"):
        x = logits.clone().requires_grad_()
        F.cross_entropy(x, targets, reduction=reduction, label_smoothing=0.1).backward()
        torch.testing.assert_close(ce.cross_entropy_grad(logits, targets.int(), reduction=reduction,
                                                         label_smoothing=0.1), x.grad, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(ce.focal_loss(logits, targets, gamma=0.0, reduction=reduction),
                                   F.cross_entropy(logits, targets, reduction=reduction), rtol=1e-7, atol=1e-7)
    nothing = torch.full((5,), -100)
    for loss in (F.cross_entropy, ce.cross_entropy):
        x = logits.clone().requires_grad_()
        loss(x, nothing).backward()  # the mean over no position is nan, and its gradient 0 (not 0 / 0)
        torch.testing.assert_close(ce.cross_entropy_grad(logits, nothing), x.grad)
        assert (x.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_are_computed_in_fp32(dtype):
    logits = (CASES[0][1] * 20).to(dtype)
    targets = random_targets(logits, seed=6)
    got = ce.cross_entropy(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), F.cross_entropy(logits.double(), targets), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: ce.cross_entropy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)), r"logits \(..., C\).*\(4, 3\).*\(5,\)"),
    (lambda: ce.cross_entropy(torch.randn(4, 3), torch.zeros(4)), "integer tensor of class indices"),
    (lambda: ce.cross_entropy(torch.randn(4, 3).long(), torch.zeros(4, dtype=torch.long)), "floating tensor"),
    (lambda: ce.cross_entropy_grad(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), reduction="none"), "'mean' or 'sum'"),
    (lambda: ce.per_sequence_cross_entropy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), r"\(B, T, C\)"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
