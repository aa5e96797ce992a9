"""Knowledge distillation: the temperature-scaled KL loss, its reverse, and the KD + CE objective (notebook 07).

For student logits s and teacher logits t, each (..., C), and a temperature T > 0, let
p_s = softmax(s / T) and p_t = softmax(t / T). The distillation loss of one distribution is
    kd = T^2 KL(p_t || p_s) = T^2 sum_k p_t,k (log p_t,k - log p_s,k),
which equals ``T**2 * F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
reduction="batchmean")`` for (N, C) logits: F.kl_div(input, target) is KL(target || input). Its gradient is
    d kd / d s = T (p_s - p_t),
because d KL / d s = (p_s - p_t) / T; for large T and zero-mean logits p ~ (1 + z / T) / C, so the
unscaled gradient shrinks like (s - t) / (C T^2) and the T^2 factor keeps it O(1) whatever T.
"""
import torch

from ._inputs import as_float, as_index, number
from .softmax import log_softmax

KD_REDUCTIONS = ("batchmean", "sum", "none")


def _logit_pair(student_logits, teacher_logits, fn):
    s = as_float("student_logits", student_logits, fn)
    t = as_float("teacher_logits", teacher_logits, fn)
    if s.dim() < 1 or s.shape != t.shape:
        raise ValueError(f"{fn}: expected student_logits and teacher_logits of the same shape (..., C), got "
                         f"{tuple(s.shape)} and {tuple(t.shape)}")
    return s, t


def _kl_rows(log_p, log_q):
    """KL(p || q) along the last axis from log-probabilities; terms with p = 0 are 0 (even where q = 0)."""
    p = log_p.exp()
    return (p * torch.where(p > 0, log_p - log_q, 0.0)).sum(-1)


def _reduce_rows(per_row, reduction, fn):
    if reduction == "mean":
        raise ValueError(f"{fn}: reduction='mean' is not supported: F.kl_div's 'mean' divides by N * C, which is "
                         f"not a KL; use 'batchmean' (the mean over distributions), 'sum' or 'none'")
    if reduction not in KD_REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {KD_REDUCTIONS}, got {reduction!r}")
    if reduction == "none":
        return per_row
    return per_row.sum() / (per_row.numel() if reduction == "batchmean" else 1)


def kd_loss(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    """T^2 KL(softmax(t / T) || softmax(s / T)) per distribution, then reduced.

    student_logits, teacher_logits: (..., C), same shape. reduction: "batchmean" (sum over all
    distributions / their number; for (N, C) this is F.kl_div's "batchmean"; (B, L, C) gives the mean
    per token), "sum", or "none" (shape (...)). -inf teacher logits (masked classes) contribute 0; a class only the
    student masks makes that KL +inf. No distributions ((0, C)): "batchmean" is nan (0 / 0), "sum" 0.
    """
    fn = "kd_loss"
    s, t = _logit_pair(student_logits, teacher_logits, fn)
    T = number(fn, "temperature", temperature, above=0)
    per_row = T ** 2 * _kl_rows(log_softmax(t, temperature=T), log_softmax(s, temperature=T))
    return _reduce_rows(per_row, reduction, fn)


def reverse_kd_loss(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    """T^2 KL(softmax(s / T) || softmax(t / T)): the mode-seeking direction. Shapes as ``kd_loss``."""
    fn = "reverse_kd_loss"
    s, t = _logit_pair(student_logits, teacher_logits, fn)
    T = number(fn, "temperature", temperature, above=0)
    per_row = T ** 2 * _kl_rows(log_softmax(s, temperature=T), log_softmax(t, temperature=T))
    return _reduce_rows(per_row, reduction, fn)


def kd_loss_grad(student_logits, teacher_logits, temperature=1.0, scaled=True):
    """Analytic d kd_loss(batchmean) / d student_logits = T (p_s - p_t) / N (without the T^2: (p_s - p_t) / (T N)).

    student_logits, teacher_logits: (..., C); N = number of distributions. Returns (..., C).
    """
    fn = "kd_loss_grad"
    s, t = _logit_pair(student_logits, teacher_logits, fn)
    T = number(fn, "temperature", temperature, above=0)
    diff = log_softmax(s, temperature=T).exp() - log_softmax(t, temperature=T).exp()
    return diff * (T if scaled else 1 / T) / max(diff[..., 0].numel(), 1)


def distillation_objective(student_logits, teacher_logits, targets, temperature=1.0, alpha=0.5):
    """alpha * CE(s, y) + (1 - alpha) * kd_loss(s, t, T): hard labels at T = 1, soft targets at T.

    student_logits, teacher_logits: (N, C); targets: (N,) class indices. Returns a scalar.
    """
    fn = "distillation_objective"
    s, t = _logit_pair(student_logits, teacher_logits, fn)
    y = as_index("targets", targets, fn)
    if s.dim() != 2 or y.shape != s.shape[:1]:
        raise ValueError(f"{fn}: expected logits (N, C) and targets (N,), got {tuple(s.shape)} and {tuple(y.shape)}")
    alpha = number(fn, "alpha", alpha, low=0.0, high=1.0, meaning=" (the weight of the hard-label loss)")
    ce = -log_softmax(s).gather(1, y[:, None]).mean()
    return alpha * ce + (1 - alpha) * kd_loss(s, t, temperature)
