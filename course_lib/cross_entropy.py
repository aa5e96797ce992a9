"""Cross-entropy from logits, its gradient, and focal loss (notebook 02).

For logits z (N, C) and integer targets y (N,), with p = softmax(z):
    loss_n = -log p[n, y_n] = logsumexp(z_n) - z[n, y_n].
With label smoothing eps the target is q = (1 - eps) onehot(y) + eps / C, so
    loss_n = -sum_k q_k log p[n, k],
and in every case dloss_n / dz_n = p_n - q_n. Rows whose target is ``ignore_index``
contribute no loss, no gradient, and do not count in the mean.
"""
import torch

from ._inputs import REDUCTIONS, as_float, as_index
from .softmax import log_softmax


def _flatten(logits, targets, fn):
    z, y = as_float("logits", logits, fn), as_index("targets", targets, fn)
    if z.dim() < 1 or tuple(y.shape) != tuple(z.shape[:-1]):
        raise ValueError(f"{fn}: expected logits (..., C) and targets (...) with the same leading "
                         f"shape, got logits {tuple(z.shape)} and targets {tuple(y.shape)}")
    return z.reshape(-1, z.shape[-1]), y.reshape(-1)


def _smoothed_targets(y, keep, num_classes, label_smoothing, dtype):
    """q = (1 - eps) onehot(y) + eps / C on kept rows, 0 on ignored rows. Shape (N, C)."""
    onehot = torch.nn.functional.one_hot(torch.where(keep, y, 0), num_classes).to(dtype)
    q = (1 - label_smoothing) * onehot + label_smoothing / num_classes
    return q * keep[:, None]


def _reduce_tokens(per_token, keep, reduction, fn):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "none":
        return per_token
    total = per_token.sum()
    return total / keep.sum() if reduction == "mean" else total  # all ignored: 0 / 0 = nan, as torch


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Mean (or sum, or per-token) cross-entropy, matching ``F.cross_entropy`` on (N, C) logits.

    logits: (..., C) floating; targets: (...) integer. Returns a scalar, or (...) for
    reduction="none" (0 at ignored positions). A mean over zero kept tokens is NaN.
    """
    fn = "cross_entropy"
    z, y = _flatten(logits, targets, fn)
    keep = y != ignore_index
    q = _smoothed_targets(y, keep, z.shape[-1], label_smoothing, z.dtype)
    per_token = -(q * log_softmax(z).masked_fill(q == 0, 0)).sum(-1)  # 0 * -inf counts as 0
    loss = _reduce_tokens(per_token, keep, reduction, fn)
    return loss.reshape(targets.shape) if reduction == "none" else loss


def cross_entropy_grad(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Analytic d cross_entropy / d logits = (softmax(z) - q) * scale, zero on ignored rows.

    scale is 1 for "sum" and 1 / (number of kept tokens) for "mean"; with no kept token every row is ignored and the
    gradient is 0, as autograd of the loss gives (of torch's as of ours), not 0 / 0. logits: (..., C). Returns (..., C).
    """
    fn = "cross_entropy_grad"
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    z, y = _flatten(logits, targets, fn)
    keep = y != ignore_index
    q = _smoothed_targets(y, keep, z.shape[-1], label_smoothing, z.dtype)
    grad = torch.where(keep[:, None], log_softmax(z).exp(), 0.0) - q  # select: an ignored row may hold inf or nan
    if reduction == "mean":
        grad = grad / keep.sum().clamp(min=1)  # nothing kept: every row is 0 already, and stays 0
    return grad.reshape(logits.shape)


def per_sequence_cross_entropy(logits, targets, ignore_index=-100):
    """Mean cross-entropy of each sequence over its own kept tokens.

    logits: (B, T, C); targets: (B, T). Returns (B,). Its mean weights every sequence
    equally, while ``cross_entropy`` weights every token equally: they differ when
    sequences have different numbers of kept tokens.
    """
    fn = "per_sequence_cross_entropy"
    if logits.dim() != 3:
        raise ValueError(f"{fn}: expected logits (B, T, C), got {tuple(logits.shape)}")
    per_token = cross_entropy(logits, targets, ignore_index, reduction="none")
    return per_token.sum(1) / (targets != ignore_index).sum(1)


def focal_loss(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    """Focal loss -(1 - p_t)^gamma log p_t, p_t the probability of the target class.

    gamma = 0 is cross-entropy; larger gamma down-weights easy (confident, correct) tokens.
    logits: (..., C); targets: (...). Returns a scalar or (...).
    """
    fn = "focal_loss"
    z, y = _flatten(logits, targets, fn)
    keep = y != ignore_index
    # selected before use, not multiplied by keep after: an ignored row's log p_t may be -inf (0 * -inf is nan, in
    # the loss and in its gradient); log p_t = 0 there gives a loss of exactly 0
    log_pt = torch.where(keep, log_softmax(z).gather(1, torch.where(keep, y, 0)[:, None]).squeeze(1), 0.0)
    per_token = -((1 - log_pt.exp()) ** gamma) * log_pt
    loss = _reduce_tokens(per_token, keep, reduction, fn)
    return loss.reshape(targets.shape) if reduction == "none" else loss
