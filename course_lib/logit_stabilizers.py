"""Two ways large runs keep their output logits in check (notebook 10): PaLM's z-loss and Gemma 2's soft-capping.

For logits z (N, V) and targets y (N,), lse_n = log sum_k e^{z_nk}, p_n = softmax(z_n), and N_valid the number of
kept rows (y_n != ignore_index):

z-loss (Chowdhery et al., 2022: PaLM, weight zeta = 1e-4). Softmax does not change when a constant is added to a
row, so the cross-entropy leaves lse, the log of the normaliser Z, free to wander; a penalty zeta * lse^2 pins it
near 0 (Z near 1), where bfloat16 still resolves the logits finely. Per kept row

    l_n = lse_n - z[n, y_n] + zeta * lse_n^2,     dl_n / dz_nk = (1 + 2 zeta lse_n) p_nk - [k == y_n].

Soft-capping (Gemma 2: cap 30 on the final logits, 50 on the attention scores). Each logit goes through
z' = cap * tanh(z / cap), smooth, about z for |z| << cap and never beyond +-cap; the cross-entropy is taken of z':

    l_n = lse(z'_n) - z'[n, y_n],     dl_n / dz_nk = (softmax(z'_n)_k - [k == y_n]) * (1 - (z'_nk / cap)^2),

the chain rule through tanh' = 1 - tanh^2. A logit of +-inf is capped to +-cap (finite, its slope 0), so a class
masked with -inf before the cap is masked no longer: its logit is -cap and its probability e^{-cap} / Z' > 0, while
no gradient reaches it. Mask after capping where a class must stay impossible.

Both losses are the mean over the N_valid kept rows, and both functions return (loss, grad): the 0-d mean loss and
its gradient d loss / d logits (N, V), written by hand (the kernels of ``triton_cross_entropy`` take a z_loss too and
write the same gradient). Arithmetic is float32 for float16 and bfloat16 logits, float64 for float64; both outputs
come back in that dtype. An ignored row has loss and gradient exactly 0, whatever it holds (-inf, nan: it is
selected away, never multiplied by 0). With no kept row the mean is 0 / 0 = nan, as ``F.cross_entropy``'s, and the
gradient is 0. The loss is also differentiable by autograd (its graph gives the same gradient).
"""
import math

import torch

from . import _inputs


def _rows(logits, targets, ignore_index, fn):
    """(z, y, keep): logits (N, V) in float32 or better with every ignored row set to 0 (a row of -inf or nan
    then computes harmlessly, and is set to 0 again at the end), targets (N,) with a valid class 0 at ignored rows."""
    z = _inputs.as_float("logits", logits, fn)
    y = _inputs.as_index("targets", targets, fn)
    if z.dim() != 2 or z.shape[1] < 1 or tuple(y.shape) != (z.shape[0],):
        raise ValueError(f"{fn}: expected logits (N, V) with V >= 1 and targets (N,), got logits {tuple(z.shape)} "
                         f"and targets {tuple(y.shape)}")
    keep = y != ignore_index
    kept = y[keep]
    if kept.numel() and (kept.min() < 0 or kept.max() >= z.shape[1]):
        raise ValueError(f"{fn}: targets must be in [0, {z.shape[1]}) or equal ignore_index={ignore_index}")
    return torch.where(keep[:, None], z, 0.0), torch.where(keep, y, 0), keep


def _logsumexp(z):
    """log sum_k e^{z_k} of each row, with the row's maximum taken out first (nothing overflows)."""
    m = z.amax(-1, keepdim=True).detach()  # a constant for autograd: the gradient is softmax either way
    return (m + (z - m).exp().sum(-1, keepdim=True).log()).squeeze(-1)


def _mean_and_scale(per_row, keep):
    """(the mean of per_row over kept rows, nan if none; 1 / max(N_valid, 1), the gradient's scale)."""
    count = keep.sum()
    return torch.where(keep, per_row, 0.0).sum() / count, 1.0 / count.clamp(min=1).to(per_row.dtype)


def z_loss_cross_entropy(logits, targets, z_loss=1e-4, ignore_index=-100):
    """Mean over kept rows of lse - z_y + z_loss * lse^2, and its gradient; returns (loss, grad).

    logits: (N, V) floating; targets: (N,) integer in [0, V) or ignore_index; z_loss: a number >= 0 (0 is plain
    cross-entropy). loss: 0-d; grad: (N, V), ((1 + 2 z_loss lse) softmax(z) - onehot(y)) / N_valid on kept rows and
    0 on ignored ones. Both in float32 (float64 for float64 logits). No kept row: loss nan, grad 0.
    """
    fn = "z_loss_cross_entropy"
    zeta = _inputs.number(fn, "z_loss", z_loss, low=0.0)
    z, y, keep = _rows(logits, targets, ignore_index, fn)
    lse = _logsumexp(z)
    z_y = z.gather(1, y[:, None]).squeeze(1)
    loss, scale = _mean_and_scale(lse - z_y + zeta * lse ** 2, keep)
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    grad = (z - lse[:, None]).exp() * (1 + 2 * zeta * lse)[:, None] - onehot
    return loss, torch.where(keep[:, None], grad * scale, 0.0)


def softcap(logits, cap):
    """cap * tanh(logits / cap): about the logits where |logits| << cap, never beyond +-cap (+-inf becomes +-cap)."""
    return cap * torch.tanh(logits / cap)


def _cap(cap, fn):
    cap = _inputs.number(fn, "cap", cap, above=0.0, meaning=" (the bound on the capped logits)")
    if not math.isfinite(cap):
        raise ValueError(f"{fn}: cap must be finite (an infinite cap is no cap: use the plain cross-entropy), "
                         f"got {cap}")
    return cap


def softcapped_cross_entropy(logits, targets, cap=30.0, ignore_index=-100):
    """Mean over kept rows of the cross-entropy of z' = cap * tanh(z / cap), and its gradient in z; (loss, grad).

    logits: (N, V) floating, +-inf allowed (capped to +-cap: a -inf class is no longer masked, its probability is
    e^{-cap} / Z' and its gradient 0); targets: (N,) integer in [0, V) or ignore_index; cap: a finite number > 0
    (ValueError otherwise). loss: 0-d; grad: (N, V), (softmax(z') - onehot(y)) * (1 - (z' / cap)^2) / N_valid on
    kept rows, 0 on ignored ones; where |z| / cap is large, tanh' = 1 - tanh^2 is 0 and so is the gradient. Both in
    float32 (float64 for float64 logits). No kept row: loss nan, grad 0.
    """
    fn = "softcapped_cross_entropy"
    cap = _cap(cap, fn)
    z, y, keep = _rows(logits, targets, ignore_index, fn)
    t = torch.tanh(z / cap)
    capped = cap * t
    lse = _logsumexp(capped)  # |z'| <= cap, but e^{cap} overflows float32 for a cap above 88: take the max out anyway
    loss, scale = _mean_and_scale(lse - capped.gather(1, y[:, None]).squeeze(1), keep)
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
    grad = ((capped - lse[:, None]).exp() - onehot) * (1 - t * t)
    return loss, torch.where(keep[:, None], grad * scale, 0.0)
