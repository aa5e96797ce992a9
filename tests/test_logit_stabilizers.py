"""course_lib.logit_stabilizers (notebook 10): z-loss and soft-capped cross-entropy in fp64, each value against
PyTorch's own functions (F.cross_entropy, torch.logsumexp, torch.tanh) and each hand-written gradient against
autograd of that independent loss; then the edges (+-1e4, -inf, all ignored, empty, low precision) and the Triton
kernel's z_loss."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from course_lib import logit_stabilizers as ls
from course_lib.grading import logits_cases, random_targets

CASES = logits_cases(num_classes=7, rows=9, seed=5, dtype=torch.float64)
IDS = [label for label, _ in CASES]


def _torch_loss(logits, targets, ignore_index=-100, z_loss=0.0, cap=None):
    """The mean loss from PyTorch's functions, in float64, ignored rows selected away first."""
    keep = targets != ignore_index
    z = torch.where(keep[:, None], logits, 0.0)
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    per_row = F.cross_entropy(z, torch.where(keep, targets, 0), reduction="none") + z_loss * torch.logsumexp(z, -1) ** 2
    return torch.where(keep, per_row, 0.0).sum() / keep.sum()


def _autograd(logits, targets, **kwargs):
    """(loss, d loss / d logits) of _torch_loss, the gradient by autograd (0 when no row is kept)."""
    x = logits.detach().clone().requires_grad_(True)
    loss = _torch_loss(x, targets, **kwargs)
    if not bool((targets != kwargs.get("ignore_index", -100)).any()):
        return loss.detach(), torch.zeros_like(logits)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _close(got, want, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)


# ---------------------------------------------------------------- z-loss

@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=IDS)
@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 1e-2, 0.5])
def test_z_loss_value_and_gradient_match_pytorch_and_autograd(logits, z_loss):
    targets = random_targets(logits, seed=6, ignore_index=-100, ignore_fraction=0.3)
    loss, grad = ls.z_loss_cross_entropy(logits, targets, z_loss=z_loss)
    want, want_grad = _autograd(logits, targets, z_loss=z_loss)
    scale = max(1.0, logits[torch.isfinite(logits)].abs().max().item())  # +-1e4: lse^2 is 1e8, rounded in fp64
    _close(loss, want, rtol=1e-10, atol=1e-12 * scale ** 2)
    _close(grad, want_grad, rtol=1e-9, atol=1e-12 * scale)
    assert loss.dtype == grad.dtype == torch.float64 and grad.shape == logits.shape


def test_z_loss_zero_is_the_plain_cross_entropy_and_its_gradient():
    logits = CASES[0][1] * 2
    targets = random_targets(logits, seed=7, ignore_index=-100, ignore_fraction=0.2)
    loss, grad = ls.z_loss_cross_entropy(logits, targets, z_loss=0.0)
    x = logits.clone().requires_grad_(True)
    F.cross_entropy(x, targets).backward()
    _close(loss, F.cross_entropy(logits, targets))
    _close(grad, x.grad)


def test_z_loss_gradient_is_the_formula_by_hand_on_a_worked_row():
    z, zeta = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), 0.1
    lse = math.log(math.e + math.e ** 2 + math.e ** 3)
    p = torch.tensor([math.exp(v - lse) for v in (1.0, 2.0, 3.0)], dtype=torch.float64)
    loss, grad = ls.z_loss_cross_entropy(z, torch.tensor([2]), z_loss=zeta)
    assert loss.item() == pytest.approx(lse - 3 + zeta * lse ** 2, rel=1e-14)
    _close(grad[0], p * (1 + 2 * zeta * lse) - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_z_loss_pulls_a_shifted_row_back_where_cross_entropy_does_not():
    """Adding c to every logit leaves the cross-entropy as it is (its gradient sums to 0 over a row); the z-loss
    gradient along that direction is 2 zeta lse."""
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8)) + 20
    y = torch.tensor([0, 1, 2, 3])
    _, plain = ls.z_loss_cross_entropy(z, y, z_loss=0.0)
    _, pinned = ls.z_loss_cross_entropy(z, y, z_loss=1e-4)
    _close(plain.sum(1), torch.zeros(4, dtype=torch.float64), atol=1e-15)
    _close(pinned.sum(1), 2e-4 * torch.logsumexp(z, -1) / 4)


def test_z_loss_extremes_stay_finite_and_exact():
    z = torch.tensor([[1e4, 0.0, -1e4], [-1e4, -math.inf, 1e4], [5.0, -math.inf, -math.inf]], dtype=torch.float64)
    y = torch.tensor([0, 2, 0])
    loss, grad = ls.z_loss_cross_entropy(z, y, z_loss=1e-4)
    # every row's cross-entropy is 0 (lse = z_y: 1e4, 1e4, 5); the z-loss terms are 1e-4 lse^2 = 1e4, 1e4 and 25e-4
    assert loss.item() == pytest.approx((1e4 + 1e4 + 25e-4) / 3, rel=1e-12)
    assert bool(torch.isfinite(grad).all())
    assert grad[1, 1].item() == 0.0 and grad[2, 1].item() == 0.0 and grad[2, 2].item() == 0.0  # masked: exactly 0
    # row 0: p = (1, 0, 0), so (1 + 2 zeta lse) p - onehot = (2, 0, 0), over 3 kept rows
    _close(grad[0], torch.tensor([2 / 3, 0.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_ignored_rows_are_exactly_zero_whatever_they_hold():
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    z[1] = math.nan
    z[2] = -math.inf
    z[3, 0] = math.inf
    y = torch.tensor([3, -100, -100, -100])
    for fn, kwargs in ((ls.z_loss_cross_entropy, {"z_loss": 0.3}), (ls.softcapped_cross_entropy, {"cap": 2.0})):
        loss, grad = fn(z, y, **kwargs)
        alone, alone_grad = fn(z[:1], y[:1], **kwargs)
        _close(loss, alone)
        _close(grad[:1], alone_grad)
        assert bool((grad[1:] == 0).all()) and not bool(grad.isnan().any())


@pytest.mark.parametrize("fn, kwargs", [(ls.z_loss_cross_entropy, {"z_loss": 1e-2}),
                                        (ls.softcapped_cross_entropy, {"cap": 3.0})])
def test_every_target_ignored_and_empty_batches(fn, kwargs):
    z = torch.randn(3, 5, dtype=torch.float64)
    loss, grad = fn(z, torch.full((3,), -100), **kwargs)
    assert math.isnan(loss.item()) and math.isnan(F.cross_entropy(z, torch.full((3,), -100)).item())
    assert bool((grad == 0).all())
    loss, grad = fn(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), **kwargs)
    assert math.isnan(loss.item()) and grad.shape == (0, 5) and grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn, kwargs", [(ls.z_loss_cross_entropy, {"z_loss": 1e-2}),
                                        (ls.softcapped_cross_entropy, {"cap": 3.0})])
def test_low_precision_logits_are_computed_in_float32(dtype, fn, kwargs):
    z = (3 * torch.randn(6, 40, generator=torch.Generator().manual_seed(10))).to(dtype)
    y = random_targets(z.float(), seed=11, ignore_index=-100, ignore_fraction=0.3)
    loss, grad = fn(z, y, **kwargs)
    want, want_grad = fn(z.double(), y, **kwargs)  # the same rounded logits, in float64
    assert loss.dtype == grad.dtype == torch.float32
    _close(loss, want.float(), rtol=1e-6, atol=1e-6)
    _close(grad, want_grad.float(), rtol=1e-5, atol=1e-7)


def test_the_loss_is_differentiable_by_autograd_to_the_same_gradient():
    z = 3 * torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    y = torch.tensor([0, 7, -100, 3, 3])
    for fn, kwargs in ((ls.z_loss_cross_entropy, {"z_loss": 0.05}), (ls.softcapped_cross_entropy, {"cap": 4.0})):
        x = z.clone().requires_grad_(True)
        loss, grad = fn(x, y, **kwargs)
        loss.backward()
        _close(x.grad, grad.detach())
        assert torch.autograd.gradcheck(lambda t: fn(t, y, **kwargs)[0], (z.clone().requires_grad_(True),))


def test_int32_targets_and_a_custom_ignore_index():
    z = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    y = torch.tensor([3, 1, 3, 5, 0], dtype=torch.int32)
    loss, grad = ls.z_loss_cross_entropy(z, y, z_loss=0.1, ignore_index=3)
    want, want_grad = _autograd(z, y.long(), z_loss=0.1, ignore_index=3)
    _close(loss, want)
    _close(grad, want_grad)


# ---------------------------------------------------------------- soft-capping

@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=IDS)
@pytest.mark.parametrize("cap", [30.0, 5.0, 1.0, 1e3])
def test_softcapped_value_and_gradient_match_pytorch_and_autograd(logits, cap):
    targets = random_targets(logits, seed=14, ignore_index=-100, ignore_fraction=0.3)
    loss, grad = ls.softcapped_cross_entropy(logits, targets, cap=cap)
    want, want_grad = _autograd(logits, targets, cap=cap)
    _close(loss, want, rtol=1e-10, atol=1e-12 * cap)
    _close(grad, want_grad, rtol=1e-9, atol=1e-13)
    assert loss.dtype == grad.dtype == torch.float64


def test_the_cap_bounds_the_logits_and_is_the_identity_far_below_it():
    z = torch.tensor([-math.inf, -1e4, -30.0, -1e-3, 0.0, 1e-3, 30.0, 1e4, math.inf], dtype=torch.float64)
    capped = ls.softcap(z, 30.0)
    assert bool((capped.abs() <= 30.0).all())
    assert capped[0].item() == -30.0 and capped[-1].item() == 30.0 and capped[4].item() == 0.0
    _close(capped[[3, 5]], z[[3, 5]], rtol=1e-9, atol=0)  # z - z^3 / (3 cap^2): 4e-13 relative at 1e-3
    assert capped[6].item() == pytest.approx(30 * math.tanh(1.0), rel=1e-15)


def test_softcap_gradient_is_the_chain_rule_by_hand_on_a_worked_row():
    z, cap = torch.tensor([[0.0, 1.0, 4.0]], dtype=torch.float64), 2.0
    t = torch.tanh(z / cap)
    capped = cap * t
    p = torch.softmax(capped, -1)
    loss, grad = ls.softcapped_cross_entropy(z, torch.tensor([1]), cap=cap)
    assert loss.item() == pytest.approx((torch.logsumexp(capped, -1) - capped[0, 1]).item(), rel=1e-14)
    _close(grad, (p - torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)) * (1 - t ** 2))


def test_infinite_logits_are_capped_a_masked_class_is_masked_no_longer():
    z = torch.tensor([[0.0, -math.inf, 1.0], [math.inf, 0.0, -math.inf]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    loss, grad = ls.softcapped_cross_entropy(z, y, cap=3.0)
    capped = torch.tensor([[0.0, -3.0, 3 * math.tanh(1 / 3)], [3.0, 0.0, -3.0]], dtype=torch.float64)
    _close(loss, F.cross_entropy(capped, y))
    assert torch.softmax(capped, -1)[0, 1].item() > 0  # the -inf class now has probability e^-3 / Z'
    assert grad[0, 1].item() == 0.0 and grad[1, 0].item() == 0.0 and grad[1, 2].item() == 0.0  # tanh'(+-inf) = 0
    assert bool(torch.isfinite(grad).all()) and bool(torch.isfinite(loss))


def test_large_logits_have_a_zero_slope_not_nan():
    z = torch.tensor([[1e4, -1e4, 0.0], [1e30, 2.0, -1e30]])
    loss, grad = ls.softcapped_cross_entropy(z, torch.tensor([2, 1]), cap=30.0)
    assert bool(torch.isfinite(grad).all()) and bool(torch.isfinite(loss))
    assert grad[0, 0].item() == 0.0 and grad[0, 1].item() == 0.0 and grad[1, 0].item() == 0.0


@pytest.mark.parametrize("cap", [0.0, -1.0, math.inf, math.nan, "30", None])
def test_a_cap_that_is_not_a_positive_finite_number_is_a_clear_error(cap):
    with pytest.raises(ValueError, match="cap"):
        ls.softcapped_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), cap=cap)


@pytest.mark.parametrize("call, message", [
    (lambda: ls.z_loss_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), z_loss=-1e-4), "z_loss must be >= 0"),
    (lambda: ls.z_loss_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3])), r"targets must be in \[0, 3\)"),
    (lambda: ls.z_loss_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)), "expected logits"),
    (lambda: ls.z_loss_cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0])), "integer tensor"),
    (lambda: ls.softcapped_cross_entropy(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1])), "floating"),
    (lambda: ls.softcapped_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1, 2])), "expected logits"),
])
def test_bad_inputs_raise_value_errors_naming_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- the Triton kernel's z_loss agrees

def test_the_triton_kernels_z_loss_agrees_with_the_reference():
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (conftest sets it too)
    pytest.importorskip("triton")
    from course_lib.triton_cross_entropy import triton_cross_entropy
    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = 4 * torch.randn(6, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(15))
    y = torch.tensor([0, 36, -100, 5, 17, 2])
    x = z.clone().to(device).requires_grad_(True)
    loss = triton_cross_entropy(x, y.to(device), z_loss=0.05, block_size=16)  # 37 = 2 * 16 + 5 columns
    loss.backward()
    want, want_grad = ls.z_loss_cross_entropy(z, y, z_loss=0.05)
    _close(loss.detach().cpu(), want, rtol=1e-7, atol=1e-9)  # the kernel gets z_loss as a float32 scalar
    _close(x.grad.cpu(), want_grad, rtol=1e-7, atol=1e-9)
