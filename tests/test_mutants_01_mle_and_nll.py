"""Notebook 01's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F
from mutants import Exercise, mutant_tests

ASSIGNMENT = "01_mle_and_nll"


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _sigmoid_by_hand(z):
    return 1 / (1 + torch.exp(-z))


# ---------------------------------------------------------------- categorical_nll

def cat_wrong_sign(probs, targets, reduction="mean"):
    return _reduce(torch.log(probs[torch.arange(probs.shape[0]), targets]), reduction)


def cat_log2(probs, targets, reduction="mean"):
    return _reduce(-torch.log2(probs[torch.arange(probs.shape[0]), targets]), reduction)


def cat_argmax_class(probs, targets, reduction="mean"):
    return _reduce(-torch.log(probs.max(dim=1).values), reduction)


def cat_one_hot_dot(probs, targets, reduction="mean"):
    one_hot = torch.zeros_like(probs)
    one_hot[torch.arange(probs.shape[0]), targets] = 1.0
    return _reduce(-(one_hot * torch.log(probs)).sum(dim=1), reduction)


def cat_eps_in_log(probs, targets, reduction="mean"):
    return _reduce(-torch.log(probs[torch.arange(probs.shape[0]), targets] + 1e-8), reduction)


def cat_sum_for_mean(probs, targets, reduction="mean"):
    loss = -torch.log(probs[torch.arange(probs.shape[0]), targets])
    return loss if reduction == "none" else loss.sum()


def cat_gather_keeps_dim(probs, targets, reduction="mean"):
    return _reduce(-torch.log(probs.gather(1, targets[:, None])), reduction)


def cat_calls_nll_loss(probs, targets, reduction="mean"):
    return F.nll_loss(torch.log(probs), targets, reduction=reduction)


def cat_loop_over_rows(probs, targets, reduction="mean"):
    return _reduce(torch.stack([-torch.log(probs[n, targets[n]]) for n in range(probs.shape[0])]), reduction)


def cat_one_hot_of_int64_only(probs, targets, reduction="mean"):
    true_class = F.one_hot(targets, probs.shape[1]).bool()   # one_hot takes int64 only: int32 targets raise
    return _reduce(-torch.where(true_class, torch.log(probs), torch.zeros_like(probs)).sum(dim=1), reduction)


def cat_gather(probs, targets, reduction="mean"):
    return _reduce(-torch.log(probs.gather(1, targets.long()[:, None]).squeeze(1)), reduction)


def cat_one_hot_of_long_targets(probs, targets, reduction="mean"):
    true_class = F.one_hot(targets.long(), probs.shape[1]).bool()
    return _reduce(-torch.where(true_class, torch.log(probs), torch.zeros_like(probs)).sum(dim=1), reduction)


def cat_masked_sum_fp64(probs, targets, reduction="mean"):
    log_p = torch.log(probs.double())
    mask = torch.arange(probs.shape[1])[None, :] == targets[:, None]
    picked = torch.where(mask, log_p, torch.zeros_like(log_p)).sum(dim=1)
    return _reduce(-picked, reduction).to(probs.dtype)


# ---------------------------------------------------------------- binary_cross_entropy

def bce_wrong_sign(probs, targets, reduction="mean"):
    loss = targets * torch.log(probs).clamp(min=-100) + (1 - targets) * torch.log1p(-probs).clamp(min=-100)
    return _reduce(loss, reduction)


def bce_log2(probs, targets, reduction="mean"):
    loss = -(targets * torch.log2(probs).clamp(min=-100) + (1 - targets) * torch.log2(1 - probs).clamp(min=-100))
    return _reduce(loss, reduction)


def bce_missing_negative_class(probs, targets, reduction="mean"):
    return _reduce(-targets * torch.log(probs).clamp(min=-100), reduction)


def bce_no_clamp(probs, targets, reduction="mean"):
    return _reduce(-(targets * torch.log(probs) + (1 - targets) * torch.log1p(-probs)), reduction)


def bce_eps_clip_probs(probs, targets, reduction="mean"):
    p = probs.clamp(1e-7, 1 - 1e-7)
    return _reduce(-(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)), reduction)


def bce_clamp_after_multiply(probs, targets, reduction="mean"):
    loss = -(targets * torch.log(probs) + (1 - targets) * torch.log1p(-probs))
    return _reduce(loss.clamp(max=100), reduction)


def bce_sum_for_mean(probs, targets, reduction="mean"):
    loss = -(targets * torch.log(probs).clamp(min=-100) + (1 - targets) * torch.log1p(-probs).clamp(min=-100))
    return loss if reduction == "none" else loss.sum()


def bce_calls_torch(probs, targets, reduction="mean"):
    return F.binary_cross_entropy(probs, targets, reduction=reduction)


def bce_mean_guarded_against_no_elements(probs, targets, reduction="mean"):
    loss = -(targets * torch.log(probs).clamp(min=-100) + (1 - targets) * torch.log1p(-probs).clamp(min=-100))
    return loss.sum() / max(loss.numel(), 1) if reduction == "mean" else _reduce(loss, reduction)


def bce_in_fp64(probs, targets, reduction="mean"):
    p, y = probs.double(), targets.double()
    loss = -(y * torch.log(p).clamp(min=-100) + (1 - y) * torch.log(1 - p).clamp(min=-100))
    return _reduce(loss, reduction).to(probs.dtype)


def bce_maximum_and_log_one_minus(probs, targets, reduction="mean"):
    floor = torch.tensor(-100.0, dtype=probs.dtype)
    log_p = torch.maximum(torch.log(probs), floor)
    log_q = torch.maximum(torch.log(1 - probs), floor)
    return _reduce(-targets * log_p - (1 - targets) * log_q, reduction)


# ---------------------------------------------------------------- binary_cross_entropy_with_logits

def bcel_naive_sigmoid_then_log(logits, targets, reduction="mean"):
    p = _sigmoid_by_hand(logits)
    return _reduce(-(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)), reduction)


def bcel_naive_clamped_like_torch(logits, targets, reduction="mean"):
    p = _sigmoid_by_hand(logits)
    loss = -(targets * torch.log(p).clamp(min=-100) + (1 - targets) * torch.log1p(-p).clamp(min=-100))
    return _reduce(loss, reduction)


def bcel_naive_eps_clip(logits, targets, reduction="mean"):
    p = _sigmoid_by_hand(logits).clamp(1e-7, 1 - 1e-7)
    return _reduce(-(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)), reduction)


def bcel_unstable_softplus(logits, targets, reduction="mean"):
    return _reduce(torch.log1p(torch.exp(logits)) - targets * logits, reduction)


def bcel_forgot_abs(logits, targets, reduction="mean"):
    return _reduce(logits.clamp(min=0) - targets * logits + torch.log1p(torch.exp(-logits)), reduction)


def bcel_forgot_max(logits, targets, reduction="mean"):
    return _reduce(-targets * logits + torch.log1p(torch.exp(-logits.abs())), reduction)


def bcel_wrong_sign_yz(logits, targets, reduction="mean"):
    return _reduce(logits.clamp(min=0) + targets * logits + torch.log1p(torch.exp(-logits.abs())), reduction)


def bcel_calls_torch(logits, targets, reduction="mean"):
    return F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)


def bcel_calls_softplus(logits, targets, reduction="mean"):
    return _reduce(F.softplus(logits) - targets * logits, reduction)


def bcel_nan_to_num(logits, targets, reduction="mean"):
    loss = logits.clamp(min=0) - targets * logits + torch.log1p(torch.exp(-logits.abs()))
    return torch.nan_to_num(_reduce(loss, reduction))


def bcel_softplus_by_hand(logits, targets, reduction="mean"):
    z = logits
    tail = torch.log1p(torch.exp(-z.abs()))
    softplus_pos = (z.abs() + z) / 2 + tail          # log(1 + e^z)
    softplus_neg = (z.abs() - z) / 2 + tail          # log(1 + e^-z)
    return _reduce(targets * softplus_neg + (1 - targets) * softplus_pos, reduction)


def bcel_clamp_for_max(logits, targets, reduction="mean"):
    # right values; autograd's slope at z = 0 is 1 (clamp) + 0 (|z|): 1 - y, where the loss's is 1/2 - y
    return _reduce(logits.clamp(min=0) - targets * logits + torch.log1p(torch.exp(-logits.abs())), reduction)


def bcel_softplus_by_hand_clamped(logits, targets, reduction="mean"):
    tail = torch.log1p(torch.exp(-logits.abs()))
    softplus_pos = logits.clamp(min=0) + tail
    softplus_neg = (-logits).clamp(min=0) + tail     # at z = 0 the two clamps give slopes -y and 1 - y: 1 - 2y
    return _reduce(targets * softplus_neg + (1 - targets) * softplus_pos, reduction)


def bcel_where_branches(logits, targets, reduction="mean"):
    z, y = logits, targets
    positive = z - y * z + torch.log1p(torch.exp(-z.clamp(min=0)))
    negative = -y * z + torch.log1p(torch.exp(z.clamp(max=0)))
    return _reduce(torch.where(z >= 0, positive, negative), reduction)


def bcel_fp64_with_log(logits, targets, reduction="mean"):
    z, y = logits.double(), targets.double()
    loss = torch.maximum(z, torch.zeros_like(z)) - y * z + torch.log(1 + torch.exp(-z.abs()))
    return _reduce(loss, reduction).to(logits.dtype)


# ---------------------------------------------------------------- bce_logit_grad

def grad_wrong_sign(logits, targets, reduction="mean"):
    grad = targets - _sigmoid_by_hand(logits)
    return grad / logits.numel() if reduction == "mean" else grad


def grad_no_mean_division(logits, targets, reduction="mean"):
    return _sigmoid_by_hand(logits) - targets


def grad_extra_sigmoid_factor(logits, targets, reduction="mean"):
    p = _sigmoid_by_hand(logits)
    grad = (p - targets) * p * (1 - p)
    return grad / logits.numel() if reduction == "mean" else grad


def grad_wrt_probability(logits, targets, reduction="mean"):
    p = _sigmoid_by_hand(logits)
    grad = (p - targets) / (p * (1 - p))
    return grad / logits.numel() if reduction == "mean" else grad


def grad_divides_by_rows(logits, targets, reduction="mean"):
    grad = _sigmoid_by_hand(logits) - targets
    return grad / logits.shape[0] if reduction == "mean" else grad


def grad_uses_autograd(logits, targets, reduction="mean"):
    z = logits.detach().clone().requires_grad_(True)
    loss = z.clamp(min=0) - targets * z + torch.log1p(torch.exp(-z.abs()))
    (g,) = torch.autograd.grad(loss.mean() if reduction == "mean" else loss.sum(), z)
    return g


def grad_fp64_exp(logits, targets, reduction="mean"):
    z = logits.double()
    grad = torch.exp(-torch.log1p(torch.exp(-z.abs())))          # sigmoid(|z|)
    grad = torch.where(z >= 0, grad, 1 - grad) - targets.double()
    if reduction == "mean":
        grad = grad / z.numel()
    return grad.to(logits.dtype)


def grad_tanh_form(logits, targets, reduction="mean"):
    grad = 0.5 * (1 + torch.tanh(logits / 2)) - targets
    return grad / logits.numel() if reduction == "mean" else grad


# ---------------------------------------------------------------- mse

def mse_abs(pred, target, reduction="mean"):
    return _reduce((pred - target).abs(), reduction)


def mse_sum_for_mean(pred, target, reduction="mean"):
    loss = (pred - target) ** 2
    return loss if reduction == "none" else loss.sum()


def mse_rmse(pred, target, reduction="mean"):
    loss = (pred - target) ** 2
    return loss if reduction == "none" else torch.sqrt(_reduce(loss, reduction))


def mse_half(pred, target, reduction="mean"):
    return _reduce(0.5 * (pred - target) ** 2, reduction)


def mse_square_of_mean(pred, target, reduction="mean"):
    diff = pred - target
    return diff ** 2 if reduction == "none" else _reduce(diff, reduction) ** 2


def mse_calls_torch(pred, target, reduction="mean"):
    return F.mse_loss(pred, target, reduction=reduction)


def mse_expanded_square(pred, target, reduction="mean"):
    return _reduce(pred ** 2 - 2 * pred * target + target ** 2, reduction)


def mse_zero_for_no_elements(pred, target, reduction="mean"):
    if pred.numel() == 0:
        return pred.new_zeros(())
    return _reduce((pred - target) ** 2, reduction)


def mse_product_fp64(pred, target, reduction="mean"):
    diff = pred.double() - target.double()
    return _reduce(diff * diff, reduction).to(pred.dtype)


def mse_pow(pred, target, reduction="mean"):
    return _reduce((target - pred).pow(2), reduction)


# ---------------------------------------------------------------- gaussian_nll

def _var(var, mean, eps):
    return torch.as_tensor(var, dtype=mean.dtype).clamp(min=eps)


def _const(full):
    return 0.5 * math.log(2 * math.pi) if full else 0.0


def gnll_no_log_var(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    return _reduce(0.5 * (target - mean) ** 2 / v + _const(full), reduction)


def gnll_no_half(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    return _reduce(torch.log(v) + (target - mean) ** 2 / v + _const(full), reduction)


def gnll_var_as_std(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    s = _var(var, mean, eps)
    return _reduce(torch.log(s) + (target - mean) ** 2 / (2 * s ** 2) + _const(full), reduction)


def gnll_adds_eps(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = torch.as_tensor(var, dtype=mean.dtype) + eps
    return _reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + _const(full), reduction)


def gnll_no_clamp(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = torch.as_tensor(var, dtype=mean.dtype)
    return _reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + _const(full), reduction)


def gnll_full_constant_not_halved(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    const = math.log(2 * math.pi) if full else 0.0
    return _reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + const, reduction)


def gnll_always_full(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    return _reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + 0.5 * math.log(2 * math.pi), reduction)


def gnll_calls_torch(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = torch.as_tensor(var, dtype=mean.dtype).expand_as(mean)
    return F.gaussian_nll_loss(mean, target, v, full=full, eps=eps, reduction=reduction)


def gnll_one_fewer_dim_is_per_row(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    if v.dim() == mean.dim() - 1:
        v = v.unsqueeze(-1)                      # F.gaussian_nll_loss's rule, not broadcasting: (C,) fails
    return _reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + _const(full), reduction)


def gnll_nan_to_num(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = _var(var, mean, eps)
    return torch.nan_to_num(_reduce(0.5 * (torch.log(v) + (target - mean) ** 2 / v) + _const(full), reduction))


def gnll_fp64_log_std(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    m, t = mean.double(), target.double()
    v = torch.maximum(torch.as_tensor(var, dtype=torch.float64), torch.tensor(eps, dtype=torch.float64))
    loss = torch.log(torch.sqrt(v)) + (t - m) ** 2 / (2 * v) + _const(full)
    return _reduce(loss.expand_as(m), reduction).to(mean.dtype)


def gnll_where_clamp(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    v = torch.as_tensor(var, dtype=mean.dtype)
    v = torch.where(v < eps, torch.full_like(v, eps), v)
    loss = 0.5 * torch.log(v) + 0.5 * (mean - target) ** 2 / v
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


EXERCISES = {
    "test_categorical_nll": Exercise("categorical_nll", differentiable=True, wrong={
        "wrong sign": cat_wrong_sign,
        "log base 2": cat_log2,
        "probability of the argmax class, not the target": cat_argmax_class,
        "one-hot times log probs (0 * -inf = nan)": cat_one_hot_dot,
        "epsilon added inside the log": cat_eps_in_log,
        "sum where the mean is asked": cat_sum_for_mean,
        "gather without squeeze: shape (N, 1)": cat_gather_keeps_dim,
        "calls F.nll_loss": cat_calls_nll_loss,
        "a Python loop over the rows (torch.stack of nothing raises on an empty batch)": cat_loop_over_rows,
        "F.one_hot of the targets (raises on int32 targets)": cat_one_hot_of_int64_only,
    }, right={
        "gather and squeeze": cat_gather,
        "masked sum in float64": cat_masked_sum_fp64,
        "F.one_hot of targets.long(), then torch.where": cat_one_hot_of_long_targets,
    }),
    "test_binary_cross_entropy": Exercise("binary_cross_entropy", differentiable=True, wrong={
        "wrong sign": bce_wrong_sign,
        "log base 2": bce_log2,
        "missing (1 - y) term": bce_missing_negative_class,
        "no clamp at -100 (inf / nan at p = 0, 1)": bce_no_clamp,
        "probabilities clipped to [1e-7, 1 - 1e-7]": bce_eps_clip_probs,
        "loss clamped after multiplying": bce_clamp_after_multiply,
        "sum where the mean is asked": bce_sum_for_mean,
        "calls F.binary_cross_entropy": bce_calls_torch,
        "mean over no elements guarded to 0 (not nan)": bce_mean_guarded_against_no_elements,
    }, right={
        "float64 arithmetic": bce_in_fp64,
        "torch.maximum and log(1 - p)": bce_maximum_and_log_one_minus,
    }),
    "test_binary_cross_entropy_with_logits": Exercise("binary_cross_entropy_with_logits", differentiable=True, wrong={
        "naive sigmoid then log": bcel_naive_sigmoid_then_log,
        "naive sigmoid then torch-style clamped BCE": bcel_naive_clamped_like_torch,
        "naive sigmoid with probabilities clipped to [1e-7, 1 - 1e-7]": bcel_naive_eps_clip,
        "log(1 + exp(z)) - y z, overflows": bcel_unstable_softplus,
        "forgot the absolute value in exp(-|z|)": bcel_forgot_abs,
        "forgot max(z, 0)": bcel_forgot_max,
        "+ y z instead of - y z": bcel_wrong_sign_yz,
        "calls F.binary_cross_entropy_with_logits": bcel_calls_torch,
        "calls F.softplus": bcel_calls_softplus,
        "nan_to_num of the result (an empty mean gives 0, not nan)": bcel_nan_to_num,
        "z.clamp(min=0) for max(z, 0) (gradient 1 - y at z = 0)": bcel_clamp_for_max,
        "softplus identity with clamps (gradient 1 - 2y at z = 0)": bcel_softplus_by_hand_clamped,
    }, right={
        "softplus identity written by hand": bcel_softplus_by_hand,
        "torch.where over the sign of z": bcel_where_branches,
        "float64 with log(1 + .) instead of log1p": bcel_fp64_with_log,
    }),
    "test_bce_logit_grad": Exercise("bce_logit_grad", wrong={
        "y - p instead of p - y": grad_wrong_sign,
        "no division by the number of elements for mean": grad_no_mean_division,
        "extra sigmoid'(z) factor (squared-error gradient)": grad_extra_sigmoid_factor,
        "gradient with respect to p, not z": grad_wrt_probability,
        "mean divides by the number of rows": grad_divides_by_rows,
        "uses autograd": grad_uses_autograd,
    }, right={
        "stable sigmoid from exp and log1p in float64": grad_fp64_exp,
        "sigmoid via tanh": grad_tanh_form,
    }),
    "test_mse": Exercise("mse", differentiable=True, wrong={
        "absolute error": mse_abs,
        "sum where the mean is asked": mse_sum_for_mean,
        "root mean squared error": mse_rmse,
        "half squared error": mse_half,
        "square of the mean error": mse_square_of_mean,
        "calls F.mse_loss": mse_calls_torch,
        "expanded square p^2 - 2pt + t^2 (cancels, and overflows at 1e20)": mse_expanded_square,
        "an empty input gives 0": mse_zero_for_no_elements,
    }, right={
        "diff * diff in float64": mse_product_fp64,
        "(target - pred).pow(2)": mse_pow,
    }),
    "test_gaussian_nll": Exercise("gaussian_nll", differentiable=True, wrong={
        "log variance term forgotten": gnll_no_log_var,
        "factor 1/2 forgotten": gnll_no_half,
        "var treated as the standard deviation": gnll_var_as_std,
        "eps added to var instead of clamping": gnll_adds_eps,
        "no clamp at eps": gnll_no_clamp,
        "full adds log(2 pi), not half of it": gnll_full_constant_not_halved,
        "constant added even when full=False": gnll_always_full,
        "calls F.gaussian_nll_loss": gnll_calls_torch,
        "a var with one dim fewer is one per row (torch's rule), not broadcast": gnll_one_fewer_dim_is_per_row,
        "nan_to_num of the result (an empty mean gives 0, not nan)": gnll_nan_to_num,
    }, right={
        "log of the standard deviation, float64": gnll_fp64_log_std,
        "torch.where clamp": gnll_where_clamp,
    }),
}

mutant_tests(globals())
