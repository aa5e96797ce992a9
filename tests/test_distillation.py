"""course_lib.distillation against F.kl_div / F.cross_entropy in fp64 (notebook 07)."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import distillation as kd
from course_lib.grading import logits_cases

CASES = logits_cases(num_classes=6, rows=8, seed=7, dtype=torch.float64)
TEACHER = logits_cases(num_classes=6, rows=8, seed=8, dtype=torch.float64)
PAIRS = [(s, t) for (_, s), (_, t) in zip(CASES, TEACHER)]
IDS = [label for label, _ in CASES]


def torch_kd(s, t, T, reduction="batchmean"):
    return T ** 2 * F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction=reduction)


@pytest.mark.parametrize("s, t", PAIRS, ids=IDS)
@pytest.mark.parametrize("T", [1.0, 2.0, 8.0])
def test_kd_loss_matches_t_squared_f_kl_div(s, t, T):
    if bool(torch.isinf(t).any()):  # F.kl_div gives nan for -inf targets: compare per element where finite
        terms = F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))
        want = T ** 2 * terms.nan_to_num().sum() / len(t)
    else:
        want = torch_kd(s, t, T)
    torch.testing.assert_close(kd.kd_loss(s, t, T), want)
    per_row = kd.kd_loss(s, t, T, reduction="none")
    assert per_row.shape == s.shape[:-1] and bool(torch.isfinite(per_row).all())
    torch.testing.assert_close(kd.kd_loss(s, t, T, reduction="sum"), per_row.sum())


def test_a_class_only_the_student_masks_costs_inf_and_nothing_averages_to_nan():
    s, t = CASES[0][1].clone(), TEACHER[0][1]
    s[:3, 2] = -math.inf                            # the teacher gives class 2 mass: KL(p_t || p_s) = inf
    per_row = kd.kd_loss(s, t, 2.0, reduction="none")
    torch.testing.assert_close(per_row, torch_kd(s, t, 2.0, reduction="none").sum(-1))
    assert per_row[:3].eq(math.inf).all() and per_row[3:].isfinite().all()
    empty = CASES[0][1][:0]
    torch.testing.assert_close(kd.kd_loss(empty, empty, 2.0), torch_kd(empty, empty, 2.0), equal_nan=True)   # 0 / 0
    assert kd.kd_loss(empty, empty, 2.0, reduction="sum").item() == 0.0
    assert kd.kd_loss(empty, empty, 2.0, reduction="none").shape == (0,)


def test_reverse_kd_swaps_the_arguments_and_sequences_average_per_token():
    s, t = CASES[0][1], TEACHER[0][1]
    torch.testing.assert_close(kd.reverse_kd_loss(s, t, 2.0), torch_kd(t, s, 2.0))
    s3, t3 = s.reshape(2, 4, 6), t.reshape(2, 4, 6)
    torch.testing.assert_close(kd.kd_loss(s3, t3, 3.0), torch_kd(s, t, 3.0))


def test_kd_is_zero_for_identical_logits_and_shift_invariant():
    s = CASES[1][1]
    assert kd.kd_loss(s, s.clone(), 4.0).abs().item() < 1e-12
    torch.testing.assert_close(kd.kd_loss(s + 5.0, TEACHER[1][1] - 3.0, 2.0), kd.kd_loss(s, TEACHER[1][1], 2.0))


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("scaled", [True, False])
def test_analytic_gradient(T, scaled):
    s, t = CASES[0][1], TEACHER[0][1]
    x = s.clone().requires_grad_()
    (torch_kd(x, t, T) / (1 if scaled else T ** 2)).backward()
    torch.testing.assert_close(kd.kd_loss_grad(s, t, T, scaled=scaled), x.grad)


def test_scaled_gradient_norm_tends_to_a_constant_for_large_temperature():
    s, t = CASES[0][1] - CASES[0][1].mean(-1, keepdim=True), TEACHER[0][1] - TEACHER[0][1].mean(-1, keepdim=True)
    limit = (s - t) / (6 * len(s))
    torch.testing.assert_close(kd.kd_loss_grad(s, t, 1e4), limit, rtol=1e-3, atol=1e-8)
    torch.testing.assert_close(kd.kd_loss_grad(s, t, 1e4, scaled=False) * 1e8, limit, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_objective(alpha):
    s, t = CASES[1][1], TEACHER[1][1]
    y = torch.arange(8) % 6
    want = alpha * F.cross_entropy(s, y) + (1 - alpha) * torch_kd(s, t, 3.0)
    torch.testing.assert_close(kd.distillation_objective(s, t, y, 3.0, alpha), want)


def test_half_inputs_give_float32_and_extreme_logits_stay_finite():
    s, t = CASES[2][1].to(torch.bfloat16), TEACHER[2][1].half()
    got = kd.kd_loss(s, t.to(torch.bfloat16), 2.0)
    assert got.dtype == torch.float32 and math.isfinite(got.item())
    big = torch.tensor([[1e4, -1e4, 0.0]]), torch.tensor([[-1e4, 1e4, 0.0]])
    torch.testing.assert_close(kd.kd_loss(*big), torch.tensor(2e4))


@pytest.mark.parametrize("call, match", [
    (lambda: kd.kd_loss(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
    (lambda: kd.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), reduction="mean"), "batchmean"),
    (lambda: kd.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0), "temperature"),
    (lambda: kd.kd_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), "floating"),
    (lambda: kd.distillation_objective(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)),
     "targets"),
    (lambda: kd.distillation_objective(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                       alpha=2), "alpha"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
