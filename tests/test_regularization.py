"""course_lib.regularization against PyTorch in fp64, on ordinary and extreme inputs (notebook 04)."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import regularization as reg
from course_lib.grading import logits_cases, random_targets

g = torch.Generator().manual_seed(0)
W = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3


# ------------------------------------------------------------------ penalties

def test_l2_penalty_gradient_is_twice_lambda_w_by_autograd():
    w = W.clone().requires_grad_()
    reg.l2_penalty(w, 0.3).backward()
    torch.testing.assert_close(reg.l2_penalty_grad(W, 0.3), w.grad)
    torch.testing.assert_close(reg.l2_penalty_grad(W, 0.3), 0.6 * W)


def test_one_sgd_step_on_the_penalty_alone_shrinks_by_one_minus_two_eta_lambda():
    eta, lam = 0.05, 0.2
    torch.testing.assert_close(W - eta * reg.l2_penalty_grad(W, lam), (1 - 2 * eta * lam) * W)


def test_torch_sgd_weight_decay_is_the_gradient_of_half_wd_times_the_squared_norm():
    w = W.clone().requires_grad_()
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=0.4)
    w.grad = torch.zeros_like(W)
    opt.step()
    torch.testing.assert_close(w.detach(), W - 0.1 * reg.l2_penalty_grad(W, 0.4 / 2))


def test_l1_proximal_step_is_softshrink_of_the_gradient_step_with_exact_zeros():
    grad = torch.randn(4, 5, generator=g, dtype=torch.float64)
    got = reg.l1_proximal_step(W, grad, lr=0.5, l1=2.0)
    u = W - 0.5 * grad
    torch.testing.assert_close(got, F.softshrink(u, 1.0))
    assert bool((got[u.abs() <= 1.0] == 0).all()) and bool((got[u.abs() > 1.0] != 0).all())


def test_l1_proximal_step_minimises_the_proximal_objective():
    u = torch.linspace(-3, 3, 61, dtype=torch.float64)
    x = reg.l1_proximal_step(u, torch.zeros_like(u), lr=0.5, l1=2.0)  # prox of t |x| with t = 1

    def objective(z):
        return 0.5 * (z - u) ** 2 + z.abs()
    for delta in (1e-3, -1e-3):
        assert bool((objective(x) <= objective(x + delta) + 1e-12).all())


def test_l1_proximal_step_is_exactly_0_where_u_is_0_and_takes_one_lr_per_coordinate():
    w, grad = W.clone(), torch.randn(4, 5, generator=g, dtype=torch.float64)
    w[0], grad[0] = 0.0, 0.0
    grad[1] = 2 * w[1]                                   # lr = 0.5: u = 0 exactly
    for lr, l1 in ((0.5, 0.4), (0.5, 0.0), (0.0, 0.4)):
        got = reg.l1_proximal_step(w, grad, lr, l1)
        torch.testing.assert_close(got, F.softshrink(w - lr * grad, lr * l1))
        assert bool((got[:2] == 0).all()) if lr else torch.equal(got, w)
    lr = torch.rand(4, 5, generator=g, dtype=torch.float64)
    want = torch.stack([F.softshrink(w[i, j] - lr[i, j] * grad[i, j], 0.3 * lr[i, j].item())
                        for i in range(4) for j in range(5)]).reshape(4, 5)
    torch.testing.assert_close(reg.l1_proximal_step(w, grad, lr, 0.3), want)


# ------------------------------------------------------------------ Adam + L2 and AdamW

def _trajectory(torch_cls, ours, dtype, steps=200, lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.3):
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(12, generator=gen, dtype=dtype)
    scales = torch.logspace(-9, 2, 12, dtype=dtype)      # eps matters for the tiny gradients
    theirs = p0.clone().requires_grad_()
    opt = torch_cls([theirs], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t in range(1, steps + 1):
        grad = torch.randn(12, generator=gen, dtype=dtype) * scales
        theirs.grad = grad.clone()
        opt.step()
        p, m, v = ours(p, grad, m, v, t, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        state = opt.state[theirs]
        # moments divided by the gradient scale (and its square), so one tolerance fits every coordinate
        yield p, m / scales, v / scales**2, theirs.detach(), state["exp_avg"] / scales, state["exp_avg_sq"] / scales**2


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_adamw_step_matches_torch_adamw_over_many_steps(dtype, tol):
    for p, m, v, tp, tm, tv in _trajectory(torch.optim.AdamW, reg.adamw_step, dtype):
        assert p.dtype == dtype
        for ours, theirs in ((p, tp), (m, tm), (v, tv)):
            torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_adam_l2_step_matches_torch_adam_with_weight_decay_over_many_steps():
    for p, m, v, tp, tm, tv in _trajectory(torch.optim.Adam, reg.adam_l2_step, torch.float64, lr=0.01):
        for ours, theirs in ((p, tp), (m, tm), (v, tv)):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_adamw_and_adam_l2_differ_and_adamw_decays_by_exactly_lr_times_wd():
    p, grad = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)
    zeros = torch.zeros_like(p)
    w_new, _, _ = reg.adamw_step(p, grad, zeros, zeros, 1, lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(w_new, p * (1 - 0.05))     # zero gradient: only the decoupled decay acts
    l2_new, _, _ = reg.adam_l2_step(p, grad, zeros, zeros, 1, lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(l2_new, p - 0.1, atol=1e-6, rtol=0)  # the decay term is normalised to a step of lr


def test_adamw_step_does_not_modify_its_inputs():
    p, grad, m, v = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))
    v = v.abs()
    before = [t.clone() for t in (p, grad, m, v)]
    out = reg.adamw_step(p, grad, m, v, 3)
    for t, b in zip((p, grad, m, v), before):
        assert torch.equal(t, b)
    assert all(o.data_ptr() not in {t.data_ptr() for t in (p, grad, m, v)} for o in out)


def test_adamw_step_in_bfloat16_is_computed_in_float32():
    p = torch.randn(6, generator=g).bfloat16()
    out = reg.adamw_step(p, p, torch.zeros_like(p), torch.zeros_like(p), 1)
    assert all(o.dtype == torch.float32 for o in out)


# ------------------------------------------------------------------ dropout

@pytest.mark.parametrize("p", [0.1, 0.3, 0.8])
def test_dropout_keeps_one_minus_p_and_preserves_the_mean_within_five_sigma(p):
    n = 200_000
    x = torch.full((n,), 2.0, dtype=torch.float64)
    out, mask = reg.dropout_forward(x, p, generator=torch.Generator().manual_seed(3))
    # the kept fraction is a mean of n Bernoulli(1 - p): sd sqrt(p (1 - p) / n); out / x has sd sqrt(p / ((1 - p) n))
    assert abs(mask.double().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(out.mean().item() / 2.0 - 1) < 5 * math.sqrt(p / ((1 - p) * n))
    torch.testing.assert_close(out, x * mask / (1 - p))


def test_dropout_matches_torch_dropout_given_the_same_mask():
    x = torch.randn(50, 40, generator=g, dtype=torch.float64)
    torch.manual_seed(5)
    theirs = F.dropout(x, 0.3, training=True)
    mask = theirs != 0
    torch.testing.assert_close(reg.dropout_backward(x, mask, 0.3), theirs)


def test_dropout_eval_mode_p0_and_p1():
    x = torch.randn(3, 4, generator=g)
    for out, mask in (reg.dropout_forward(x, 0.5, training=False), reg.dropout_forward(x, 0.0)):
        assert torch.equal(out, x) and bool(mask.all())
    out, mask = reg.dropout_forward(x, 1.0)
    assert torch.equal(out, torch.zeros_like(x)) and not bool(mask.any())


def test_dropout_is_reproducible_with_a_generator():
    x = torch.randn(100, generator=g)
    a = reg.dropout_forward(x, 0.5, generator=torch.Generator().manual_seed(7))[1]
    b = reg.dropout_forward(x, 0.5, generator=torch.Generator().manual_seed(7))[1]
    c = reg.dropout_forward(x, 0.5, generator=torch.Generator().manual_seed(8))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.9, 1.0])
def test_dropout_backward_is_autograd_of_the_forward_with_its_mask(p):
    x = torch.randn(6, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 7, generator=g) >= p
    w = torch.randn(6, 7, generator=g, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    scale = 0.0 if p == 1 else 1 / (1 - p)
    (w * xr * mask * scale).sum().backward()
    got = reg.dropout_backward(w, mask, p)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, xr.grad)


def test_dropout_half_precision_input_gives_float32():
    out, _ = reg.dropout_forward(torch.randn(8, generator=g).half(), 0.5, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32


# ------------------------------------------------------------------ label smoothing

CASES = logits_cases(num_classes=6, rows=8, seed=2, dtype=torch.float64)


@pytest.mark.parametrize("logits", [x for _, x in CASES], ids=[label for label, _ in CASES])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 1.0])
def test_label_smoothed_cross_entropy_matches_torch(logits, epsilon):
    targets = random_targets(logits, seed=3)
    got = reg.label_smoothed_cross_entropy(logits, targets, epsilon)
    torch.testing.assert_close(got, F.cross_entropy(logits, targets, label_smoothing=epsilon))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_label_smoothed_cross_entropy_takes_any_integer_targets(dtype):
    logits = CASES[0][1]
    targets = random_targets(logits, seed=5)
    for epsilon in (0.0, 0.2):
        torch.testing.assert_close(reg.label_smoothed_cross_entropy(logits, targets.to(dtype), epsilon),
                                   F.cross_entropy(logits, targets, label_smoothing=epsilon))


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_label_smoothed_cross_entropy_of_an_empty_batch_is_nan_as_torch(epsilon):
    logits, targets = torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    assert math.isnan(reg.label_smoothed_cross_entropy(logits, targets, epsilon).item())
    assert math.isnan(F.cross_entropy(logits, targets, label_smoothing=epsilon).item())


def test_smoothing_term_is_kl_to_uniform_plus_log_c():
    logits, targets = CASES[0][1], random_targets(CASES[0][1], seed=4)
    C, eps = logits.shape[1], 0.2
    log_p = torch.log_softmax(logits, dim=1)
    kl_u_p = (1 / C * (math.log(1 / C) - log_p)).sum(1)
    want = (1 - eps) * F.cross_entropy(logits, targets) + eps * (kl_u_p + math.log(C)).mean()
    torch.testing.assert_close(reg.label_smoothed_cross_entropy(logits, targets, eps), want)


# ------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("call, message", [
    (lambda: reg.l2_penalty_grad(torch.arange(3), 0.1), "floating tensor"),
    (lambda: reg.l2_penalty_grad(W, -1.0), r"weight_decay must be >= 0, got -1.0"),
    (lambda: reg.l1_proximal_step(W, W[0], 0.1, 0.1), r"w and grad to have the same shape.*\(4, 5\).*\(5,\)"),
    (lambda: reg.adamw_step(W, W, W, W, 0), "step must be an int >= 1"),
    (lambda: reg.adamw_step(W, W, W, W[0], 1), "same shape"),
    (lambda: reg.adamw_step(W, W, W, W, 1, betas=(0.9, 1.5)), r"betas\[1\] must lie in \[0, 1\], got 1.5"),
    (lambda: reg.dropout_forward(W, 1.5), r"p must lie in \[0, 1\], got 1.5"),
    (lambda: reg.dropout_forward([1.0, 2.0], 0.5), "must be a torch.Tensor"),
    (lambda: reg.dropout_backward(W, torch.ones(3, dtype=torch.bool), 0.5), "grad_out and mask to have the same shape"),
    (lambda: reg.label_smoothed_cross_entropy(W[0], torch.tensor(1), 0.1), r"logits \(N, C\)"),
    (lambda: reg.label_smoothed_cross_entropy(W, torch.zeros(4, dtype=torch.long), 2.0), "epsilon must lie in"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
