"""Notebook 02's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, upcast

ASSIGNMENT = "02_softmax_and_cross_entropy"


# ------------------------------------------------------------------ shared pieces (elementary torch only)

def _finite_max(x, dim):
    m = x.amax(dim=dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _lse(x, dim=-1):
    m = _finite_max(x, dim)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def _log_softmax(x, dim=-1):
    return x - _lse(x, dim).unsqueeze(dim)


def _flat(logits, targets, ignore_index):
    z = upcast(logits).reshape(-1, logits.shape[-1])
    y = targets.reshape(-1).long()
    keep = y != ignore_index
    return z, torch.where(keep, y, torch.zeros_like(y)), keep


def _reduce(per_token, keep, reduction, targets):
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token))
    if reduction == "none":
        return per_token.reshape(targets.shape)
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / keep.sum()


def _gather(t, y):
    return t.gather(1, y[:, None]).squeeze(1)


# ------------------------------------------------------------------ softmax

def softmax_no_max_shift(logits, dim=-1, temperature=1.0):
    e = torch.exp(upcast(logits) / temperature)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_temperature_multiplied(logits, dim=-1, temperature=1.0):
    x = upcast(logits) * temperature
    e = torch.exp(x - _finite_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_always_last_axis(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    e = torch.exp(x - _finite_max(x, -1))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_in_half_precision(logits, dim=-1, temperature=1.0):
    x = logits / temperature                    # no upcast: bf16 stays bf16
    e = torch.exp(x - _finite_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_divides_by_max(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    e = torch.exp(x - _finite_max(x, dim))
    return e / e.amax(dim=dim, keepdim=True)


def softmax_calls_torch(logits, dim=-1, temperature=1.0):
    return torch.softmax(upcast(logits) / temperature, dim=dim)


def softmax_tensor_method_alias(logits, dim=-1, temperature=1.0):
    return (upcast(logits) / temperature).softmax(dim)


def softmax_via_torch_log_softmax(logits, dim=-1, temperature=1.0):
    return F.log_softmax(upcast(logits) / temperature, dim=dim).exp()


def softmax_always_float32(logits, dim=-1, temperature=1.0):
    x = logits.float() / temperature             # float64 rounded to float32 too
    e = torch.exp(x - _finite_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_float64(logits, dim=-1, temperature=1.0):
    x = logits.double() / temperature
    e = torch.exp(x - _finite_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_exp_of_log_probs(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    return torch.exp(x - _lse(x, dim).unsqueeze(dim))


# ------------------------------------------------------------------ logsumexp

def logsumexp_no_max_shift(x, dim=-1):
    return torch.log(torch.exp(upcast(x)).sum(dim=dim))


def logsumexp_max_not_finite_checked(x, dim=-1):
    x = upcast(x)
    m = x.amax(dim=dim, keepdim=True)           # -inf for a fully masked slice: -inf - (-inf) = nan
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def logsumexp_forgets_max(x, dim=-1):
    x = upcast(x)
    return torch.log(torch.exp(x - _finite_max(x, dim)).sum(dim=dim))


def logsumexp_base2(x, dim=-1):
    x = upcast(x)
    m = _finite_max(x, dim)
    return (m + torch.log2(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def logsumexp_global_max(x, dim=-1):
    x = upcast(x)
    m = x.max()                                 # one shift for the whole tensor, not per slice
    m = m if torch.isfinite(m) else torch.zeros_like(m)
    return m + torch.log(torch.exp(x - m).sum(dim=dim))


def logsumexp_calls_torch(x, dim=-1):
    return torch.logsumexp(upcast(x), dim=dim)


def logsumexp_special_alias(x, dim=-1):
    return torch.special.logsumexp(upcast(x), dim)


def logsumexp_always_float32(x, dim=-1):
    return _lse(x.float(), dim)


def logsumexp_max_plus_log1p(x, dim=-1):
    x = upcast(x)
    m = x.amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    rest = torch.exp(x - shift).sum(dim=dim, keepdim=True) - 1.0   # everything but the max's exp(0) = 1
    out = torch.where(torch.isfinite(m), m + torch.log1p(rest), m)
    return out.squeeze(dim)


def logsumexp_float64(x, dim=-1):
    return _lse(x.double(), dim)


# ------------------------------------------------------------------ log_softmax

def log_softmax_log_of_naive_softmax(logits, dim=-1, temperature=1.0):
    e = torch.exp(upcast(logits) / temperature)
    return torch.log(e / e.sum(dim=dim, keepdim=True))


def log_softmax_log_of_stable_softmax(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    e = torch.exp(x - _finite_max(x, dim))
    return torch.log(e / e.sum(dim=dim, keepdim=True))


def log_softmax_only_subtracts_max(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    return x - _finite_max(x, dim)


def log_softmax_temperature_multiplied(logits, dim=-1, temperature=1.0):
    return _log_softmax(upcast(logits) * temperature, dim)


def log_softmax_in_half_precision(logits, dim=-1, temperature=1.0):
    return _log_softmax(logits / temperature, dim)


def log_softmax_calls_torch(logits, dim=-1, temperature=1.0):
    return torch.log_softmax(upcast(logits) / temperature, dim=dim)


def log_softmax_functional_alias(logits, dim=-1, temperature=1.0):
    return F.log_softmax(upcast(logits) / temperature, dim=dim)


def log_softmax_always_float32(logits, dim=-1, temperature=1.0):
    return _log_softmax(logits.float() / temperature, dim)


def log_softmax_float64(logits, dim=-1, temperature=1.0):
    x = logits.double() / temperature
    m = _finite_max(x, dim)
    return x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))


def log_softmax_via_log1p(logits, dim=-1, temperature=1.0):
    x = upcast(logits) / temperature
    return x - logsumexp_max_plus_log1p(x, dim).unsqueeze(dim)


# ------------------------------------------------------------------ cross_entropy

def _nll_from_log_probs(log_p, y, label_smoothing):
    nll = -_gather(log_p, y)
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll + label_smoothing * (-log_p).mean(dim=1)
    return nll


def _ce_per_token(z, y, label_smoothing):
    log_p = _log_softmax(z)
    nll = -_gather(log_p, y)
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll + label_smoothing * (-log_p).mean(dim=1)
    return nll


def ce_mean_over_all_positions(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    per_token = torch.where(keep, _ce_per_token(z, y, label_smoothing), torch.zeros(()))
    if reduction == "mean":
        return per_token.sum() / len(per_token)          # padding counted in the denominator
    return _reduce(per_token, keep, reduction, targets)


def ce_smoothing_over_other_classes(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    log_p = _log_softmax(z)
    num_classes = z.shape[-1]
    nll = -_gather(log_p, y)
    others = (-log_p).sum(dim=1) - nll                   # eps spread over the C - 1 wrong classes only
    per_token = (1 - label_smoothing) * nll + label_smoothing * others / (num_classes - 1)
    return _reduce(per_token, keep, reduction, targets)


def ce_base2(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    return _reduce(_ce_per_token(z, y, label_smoothing) / math.log(2), keep, reduction, targets)


def ce_log_of_naive_softmax(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    e = torch.exp(z)
    return _reduce(_nll_from_log_probs(torch.log(e / e.sum(dim=1, keepdim=True)), y, label_smoothing),
                   keep, reduction, targets)


def ce_log_of_stable_softmax(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    e = torch.exp(z - _finite_max(z, 1))
    return _reduce(_nll_from_log_probs(torch.log(e / e.sum(dim=1, keepdim=True)), y, label_smoothing),
                   keep, reduction, targets)


def ce_dense_q_times_log_p(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    num_classes = z.shape[-1]
    q = (1 - label_smoothing) * (torch.arange(num_classes) == y[:, None]).to(z.dtype) + label_smoothing / num_classes
    per_token = -(q * _log_softmax(z)).sum(dim=1)         # 0 * (-inf) = nan on masked classes
    return _reduce(per_token, keep, reduction, targets)


def ce_all_ignored_gives_zero(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    per_token = torch.where(keep, _ce_per_token(z, y, label_smoothing), torch.zeros(()))
    if reduction == "mean":
        return per_token.sum() / keep.sum().clamp_min(1)
    return _reduce(per_token, keep, reduction, targets)


def ce_ignore_index_hard_coded(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, -100)
    return _reduce(_ce_per_token(z, y, label_smoothing), keep, reduction, targets)


def ce_ignores_label_smoothing(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    return _reduce(_ce_per_token(z, y, 0.0), keep, reduction, targets)


def ce_in_half_precision(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z = logits.reshape(-1, logits.shape[-1])             # no upcast
    y = targets.reshape(-1).long()
    keep = y != ignore_index
    y = torch.where(keep, y, torch.zeros_like(y))
    return _reduce(_ce_per_token(z, y, label_smoothing), keep, reduction, targets)


def ce_calls_torch(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    out = F.cross_entropy(upcast(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index,
                          reduction=reduction, label_smoothing=label_smoothing)
    return out.reshape(targets.shape) if reduction == "none" else out


def ce_nll_loss_on_own_log_probs(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, _, keep = _flat(logits, targets, ignore_index)
    log_p = _log_softmax(z)
    nll = F.nll_loss(log_p, targets.reshape(-1), ignore_index=ignore_index, reduction="none")
    per_token = (1 - label_smoothing) * nll + label_smoothing * (-log_p).mean(dim=1)
    return _reduce(per_token, keep, reduction, targets)


def ce_multiplies_by_the_mask(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    per_token = _ce_per_token(z, y, label_smoothing) * keep     # 0 * inf = nan at an ignored row of -inf or nan
    if reduction == "none":
        return per_token.reshape(targets.shape)
    return per_token.sum() / keep.sum() if reduction == "mean" else per_token.sum()


def ce_smoothing_over_finite_log_probs(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    log_p = _log_softmax(z)
    finite = torch.isfinite(log_p)               # a masked class dropped from the mean: the loss stays finite
    smooth = -torch.where(finite, log_p, torch.zeros_like(log_p)).sum(dim=1) / finite.sum(dim=1)
    per_token = (1 - label_smoothing) * -_gather(log_p, y) + label_smoothing * smooth
    return _reduce(per_token, keep, reduction, targets)


def _one_hot_target_of_int64_only(logits, targets, ignore_index, label_smoothing):
    """(z, q, keep) with the smoothed one-hot target q built by F.one_hot from the targets as given: no .long(), so
    int32 targets raise."""
    z = upcast(logits).reshape(-1, logits.shape[-1])
    y = targets.reshape(-1)
    keep = y != ignore_index
    num_classes = z.shape[-1]
    q = (1 - label_smoothing) * F.one_hot(torch.where(keep, y, 0), num_classes) + label_smoothing / num_classes
    return z, q, keep


def ce_one_hot_of_int64_only(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, q, keep = _one_hot_target_of_int64_only(logits, targets, ignore_index, label_smoothing)
    log_p = _log_softmax(z)
    per_token = -torch.where(q > 0, q * log_p, torch.zeros_like(log_p)).sum(dim=1)
    return _reduce(per_token, keep, reduction, targets)


def ce_one_hot_of_long_targets(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    return ce_one_hot_of_int64_only(logits, targets.long(), ignore_index, reduction, label_smoothing)


def ce_always_float32(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits.float(), targets, ignore_index)     # float64 rounded to float32 too
    return _reduce(_ce_per_token(z, y, label_smoothing), keep, reduction, targets)


def ce_gather_float64(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits.double(), targets, ignore_index)
    return _reduce(_ce_per_token(z, y, label_smoothing), keep, reduction, targets)


def ce_lse_minus_target_logit(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    lse = logsumexp_max_plus_log1p(z, 1)
    nll = lse - _gather(z, y)
    smooth = lse - z.mean(dim=1)                         # mean_k(lse - z_k); inf for masked classes, as expected
    per_token = nll if label_smoothing == 0 else (1 - label_smoothing) * nll + label_smoothing * smooth
    return _reduce(per_token, keep, reduction, targets)


# ------------------------------------------------------------------ per_sequence_cross_entropy

def _seq_per_token(logits, targets, ignore_index):
    return ce_gather_float64(logits, targets, ignore_index=ignore_index, reduction="none")


def per_sequence_divides_by_length(logits, targets, ignore_index=-100):
    return _seq_per_token(logits, targets, ignore_index).sum(dim=1) / targets.shape[1]


def per_sequence_sum_not_mean(logits, targets, ignore_index=-100):
    return _seq_per_token(logits, targets, ignore_index).sum(dim=1)


def per_sequence_token_mean_repeated(logits, targets, ignore_index=-100):
    per_token = _seq_per_token(logits, targets, ignore_index)
    kept = targets != ignore_index
    return (per_token.sum() / kept.sum()).repeat(targets.shape[0])


def per_sequence_empty_gives_zero(logits, targets, ignore_index=-100):
    kept = (targets != ignore_index).sum(dim=1)
    return _seq_per_token(logits, targets, ignore_index).sum(dim=1) / kept.clamp_min(1)


def per_sequence_calls_torch(logits, targets, ignore_index=-100):
    batch, length, num_classes = logits.shape
    per_token = F.cross_entropy(upcast(logits).reshape(-1, num_classes), targets.reshape(-1),
                                ignore_index=ignore_index, reduction="none").reshape(batch, length)
    return per_token.sum(dim=1) / (targets != ignore_index).sum(dim=1)


def per_sequence_float64(logits, targets, ignore_index=-100):
    kept = (targets != ignore_index).sum(dim=1)
    return _seq_per_token(logits, targets, ignore_index).sum(dim=1) / kept


def _nll_in_3d(logits, targets, ignore_index):
    z = upcast(logits)
    kept = targets != ignore_index
    y = torch.where(kept, targets, torch.zeros_like(targets))
    m = _finite_max(z, -1)
    lse = (m + torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))).squeeze(-1)
    return lse - z.gather(-1, y[..., None]).squeeze(-1), kept


def per_sequence_masked_mean_in_3d(logits, targets, ignore_index=-100):
    nll, kept = _nll_in_3d(logits, targets, ignore_index)
    return torch.where(kept, nll, torch.zeros_like(nll)).sum(dim=1) / kept.sum(dim=1)


def per_sequence_multiplies_by_the_mask(logits, targets, ignore_index=-100):
    nll, kept = _nll_in_3d(logits, targets, ignore_index)
    return (nll * kept).sum(dim=1) / kept.sum(dim=1)           # 0 * inf = nan at padding of -inf or nan


def per_sequence_always_float32(logits, targets, ignore_index=-100):
    nll, kept = _nll_in_3d(logits.float(), targets, ignore_index)
    return torch.where(kept, nll, torch.zeros_like(nll)).sum(dim=1) / kept.sum(dim=1)


# ------------------------------------------------------------------ cross_entropy_grad

def _p_and_q(logits, targets, ignore_index, label_smoothing, spread_over_others=False):
    z, y, keep = _flat(logits, targets, ignore_index)
    num_classes = z.shape[-1]
    p = torch.exp(_log_softmax(z))
    onehot = (torch.arange(num_classes) == y[:, None]).to(p.dtype)
    if spread_over_others:
        q = (1 - label_smoothing) * onehot + label_smoothing * (1 - onehot) / (num_classes - 1)
    else:
        q = (1 - label_smoothing) * onehot + label_smoothing / num_classes
    return p, q, keep


def _finish_grad(grad, keep, reduction, logits, count=None):
    grad = torch.where(keep[:, None], grad, torch.zeros_like(grad))
    if reduction == "mean":
        grad = grad / (keep.sum().clamp(min=1) if count is None else count)   # nothing kept: 0, as autograd's
    return grad.reshape(logits.shape)


def grad_target_minus_p(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    return _finish_grad(q - p, keep, reduction, logits)


def grad_forgets_one_over_n(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    return _finish_grad(p - q, keep, "sum", logits)


def grad_divides_by_all_positions(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    return _finish_grad(p - q, keep, reduction, logits, count=len(keep))


def grad_ignored_rows_not_zeroed(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    grad = p - q * keep[:, None]                         # ignored rows keep their p
    if reduction == "mean":
        grad = grad / keep.sum()
    return grad.reshape(logits.shape)


def grad_ignores_label_smoothing(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, 0.0)
    return _finish_grad(p - q, keep, reduction, logits)


def grad_smoothing_over_other_classes(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing, spread_over_others=True)
    return _finish_grad(p - q, keep, reduction, logits)


def grad_autograd_of_torch_loss(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z = upcast(logits).detach().reshape(-1, logits.shape[-1]).requires_grad_(True)
    F.cross_entropy(z, targets.reshape(-1), ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing).backward()
    return z.grad.reshape(logits.shape)


def grad_autograd_grad_of_own_loss(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z = upcast(logits).detach().requires_grad_(True)
    loss = ce_lse_minus_target_logit(z, targets, ignore_index, reduction, label_smoothing)
    return torch.autograd.grad(loss, z)[0]


def grad_multiplies_by_the_mask(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    grad = (p - q) * keep[:, None]                       # 0 * nan = nan at an ignored row of -inf or nan
    if reduction == "mean":
        grad = grad / keep.sum().clamp(min=1)
    return grad.reshape(logits.shape)


def grad_nan_when_nothing_is_kept(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits, targets, ignore_index, label_smoothing)
    return _finish_grad(p - q, keep, reduction, logits, count=keep.sum())      # 0 / 0 = nan, where autograd gives 0


def grad_one_hot_of_int64_only(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, q, keep = _one_hot_target_of_int64_only(logits, targets, ignore_index, label_smoothing)
    return _finish_grad(torch.exp(_log_softmax(z)) - q, keep, reduction, logits)


def grad_always_float32(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits.float(), targets, ignore_index, label_smoothing)
    return _finish_grad(p - q, keep, reduction, logits)


def grad_float64(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    p, q, keep = _p_and_q(logits.double(), targets, ignore_index, label_smoothing)
    return _finish_grad(p - q, keep, reduction, logits)


def grad_scatter_onehot(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    z, y, keep = _flat(logits, targets, ignore_index)
    num_classes = z.shape[-1]
    e = torch.exp(z - _finite_max(z, 1))
    p = e / e.sum(dim=1, keepdim=True)
    target = torch.full_like(p, label_smoothing / num_classes)
    target.scatter_add_(1, y[:, None], torch.full((len(y), 1), 1.0 - label_smoothing, dtype=p.dtype))
    grad = torch.where(keep[:, None], p - target, torch.zeros_like(p))
    if reduction == "mean":
        grad = grad / torch.where(keep.any(), keep.sum(), 1)
    return grad.reshape(logits.shape)


# ------------------------------------------------------------------ focal_loss

def _log_pt(logits, targets, ignore_index):
    z, y, keep = _flat(logits, targets, ignore_index)
    return _gather(_log_softmax(z), y), keep


def focal_without_gamma(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits, targets, ignore_index)
    return _reduce(-log_pt, keep, reduction, targets)


def focal_pt_to_the_gamma(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits, targets, ignore_index)
    return _reduce(-(log_pt.exp() ** gamma) * log_pt, keep, reduction, targets)


def focal_mean_over_all_positions(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits, targets, ignore_index)
    per_token = torch.where(keep, -((1 - log_pt.exp()) ** gamma) * log_pt, torch.zeros(()))
    if reduction == "mean":
        return per_token.sum() / len(per_token)
    return _reduce(per_token, keep, reduction, targets)


def focal_log_of_stable_softmax(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    z, y, keep = _flat(logits, targets, ignore_index)
    e = torch.exp(z - _finite_max(z, 1))
    pt = _gather(e / e.sum(dim=1, keepdim=True), y)
    return _reduce(-((1 - pt) ** gamma) * torch.log(pt), keep, reduction, targets)


def focal_weight_from_top_class(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    z, y, keep = _flat(logits, targets, ignore_index)
    log_p = _log_softmax(z)
    p_max = log_p.amax(dim=1).exp()                      # confidence of the argmax, not of the target
    return _reduce(-((1 - p_max) ** gamma) * _gather(log_p, y), keep, reduction, targets)


def focal_calls_torch(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    z, _, keep = _flat(logits, targets, ignore_index)
    ce = F.cross_entropy(z, targets.reshape(-1), ignore_index=ignore_index, reduction="none")
    return _reduce((1 - torch.exp(-ce)) ** gamma * ce, keep, reduction, targets)


def focal_multiplies_by_the_mask(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits, targets, ignore_index)
    per_token = -((1 - log_pt.exp()) ** gamma) * log_pt * keep    # 0 * inf = nan where an ignored log p_t is -inf
    if reduction == "none":
        return per_token.reshape(targets.shape)
    return per_token.sum() / keep.sum() if reduction == "mean" else per_token.sum()


def focal_always_float32(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits.float(), targets, ignore_index)
    return _reduce(-((1 - log_pt.exp()) ** gamma) * log_pt, keep, reduction, targets)


def focal_float64(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    log_pt, keep = _log_pt(logits.double(), targets, ignore_index)
    return _reduce(-((1 - log_pt.exp()) ** gamma) * log_pt, keep, reduction, targets)


def focal_via_lse_and_expm1(logits, targets, gamma=2.0, ignore_index=-100, reduction="mean"):
    z, y, keep = _flat(logits, targets, ignore_index)
    nll = logsumexp_max_plus_log1p(z, 1) - _gather(z, y)      # -log p_t
    weight = (-torch.expm1(-nll)) ** gamma                     # 1 - p_t, accurate near p_t = 1
    return _reduce(weight * nll, keep, reduction, targets)


EXERCISES = {
    "test_softmax": Exercise("softmax", differentiable=True, wrong={
        "no max subtraction": softmax_no_max_shift,
        "temperature multiplied instead of divided": softmax_temperature_multiplied,
        "always normalizes over the last axis": softmax_always_last_axis,
        "computed in the input's half precision": softmax_in_half_precision,
        "divides by the max instead of the sum": softmax_divides_by_max,
        "calls torch.softmax": softmax_calls_torch,
        "calls Tensor.softmax (alias)": softmax_tensor_method_alias,
        "exp of F.log_softmax": softmax_via_torch_log_softmax,
        "float64 rounded to float32": softmax_always_float32,
    }, right={
        "float64 arithmetic": softmax_float64,
        "exp(x - logsumexp(x))": softmax_exp_of_log_probs,
    }),
    "test_logsumexp": Exercise("logsumexp", differentiable=True, wrong={
        "no max subtraction": logsumexp_no_max_shift,
        "max not handled for all -inf slices": logsumexp_max_not_finite_checked,
        "forgets to add the max back": logsumexp_forgets_max,
        "base-2 log": logsumexp_base2,
        "one global max for the whole tensor": logsumexp_global_max,
        "calls torch.logsumexp": logsumexp_calls_torch,
        "calls torch.special.logsumexp (alias)": logsumexp_special_alias,
        "float64 rounded to float32": logsumexp_always_float32,
    }, right={
        "max plus log1p of the rest": logsumexp_max_plus_log1p,
        "float64 arithmetic": logsumexp_float64,
    }),
    "test_log_softmax": Exercise("log_softmax", differentiable=True, wrong={
        "log of the naive softmax": log_softmax_log_of_naive_softmax,
        "log of the stable softmax (underflow)": log_softmax_log_of_stable_softmax,
        "subtracts only the max": log_softmax_only_subtracts_max,
        "temperature multiplied instead of divided": log_softmax_temperature_multiplied,
        "computed in the input's half precision": log_softmax_in_half_precision,
        "calls torch.log_softmax": log_softmax_calls_torch,
        "calls F.log_softmax (alias)": log_softmax_functional_alias,
        "float64 rounded to float32": log_softmax_always_float32,
    }, right={
        "float64 arithmetic": log_softmax_float64,
        "x - (max + log1p of the rest)": log_softmax_via_log1p,
    }),
    "test_cross_entropy": Exercise("cross_entropy", differentiable=True, wrong={
        "mean over all positions including ignored ones": ce_mean_over_all_positions,
        "label smoothing spread over the C - 1 other classes": ce_smoothing_over_other_classes,
        "base-2 log (bits)": ce_base2,
        "log of the naive softmax": ce_log_of_naive_softmax,
        "log of the stable softmax (underflow)": ce_log_of_stable_softmax,
        "dense q * log p (0 * -inf = nan)": ce_dense_q_times_log_p,
        "all-ignored mean clamped to 0": ce_all_ignored_gives_zero,
        "ignore_index hard-coded to -100": ce_ignore_index_hard_coded,
        "label smoothing ignored": ce_ignores_label_smoothing,
        "computed in the input's half precision": ce_in_half_precision,
        "calls F.cross_entropy": ce_calls_torch,
        "calls F.nll_loss on its own log-probs": ce_nll_loss_on_own_log_probs,
        "multiplies by the mask (0 * inf = nan at an ignored row of -inf)": ce_multiplies_by_the_mask,
        "label smoothing averages only the finite log-probs": ce_smoothing_over_finite_log_probs,
        "F.one_hot of the targets (raises on int32 targets)": ce_one_hot_of_int64_only,
        "float64 rounded to float32": ce_always_float32,
    }, right={
        "gather of float64 log-probs": ce_gather_float64,
        "logsumexp minus the target logit": ce_lse_minus_target_logit,
        "dense q from F.one_hot(targets.long()), products selected where q > 0": ce_one_hot_of_long_targets,
    }),
    "test_per_sequence_cross_entropy": Exercise("per_sequence_cross_entropy", differentiable=True, wrong={
        "divides by the padded length T": per_sequence_divides_by_length,
        "sum instead of mean per sequence": per_sequence_sum_not_mean,
        "token mean copied to every sequence": per_sequence_token_mean_repeated,
        "fully padded sequence gives 0": per_sequence_empty_gives_zero,
        "calls F.cross_entropy": per_sequence_calls_torch,
        "multiplies by the mask (0 * inf = nan at padding of -inf)": per_sequence_multiplies_by_the_mask,
        "float64 rounded to float32": per_sequence_always_float32,
    }, right={
        "float64 per-token losses": per_sequence_float64,
        "masked mean directly on (B, T)": per_sequence_masked_mean_in_3d,
    }),
    "test_cross_entropy_grad": Exercise("cross_entropy_grad", wrong={
        "y - p (sign flipped)": grad_target_minus_p,
        "forgets the 1/N of the mean": grad_forgets_one_over_n,
        "divides by all positions including ignored ones": grad_divides_by_all_positions,
        "ignored rows not zeroed": grad_ignored_rows_not_zeroed,
        "label smoothing ignored (p - onehot)": grad_ignores_label_smoothing,
        "label smoothing spread over the C - 1 other classes": grad_smoothing_over_other_classes,
        "autograd of F.cross_entropy": grad_autograd_of_torch_loss,
        "torch.autograd.grad of its own loss": grad_autograd_grad_of_own_loss,
        "multiplies by the mask (0 * nan = nan at an ignored row of -inf)": grad_multiplies_by_the_mask,
        "divides by a kept count of 0 (nan, where autograd gives 0)": grad_nan_when_nothing_is_kept,
        "F.one_hot of the targets (raises on int32 targets)": grad_one_hot_of_int64_only,
        "float64 rounded to float32": grad_always_float32,
    }, right={
        "float64 softmax minus smoothed target": grad_float64,
        "scatter-built target": grad_scatter_onehot,
    }),
    "test_focal_loss": Exercise("focal_loss", differentiable=True, wrong={
        "gamma not applied (plain cross-entropy)": focal_without_gamma,
        "p_t^gamma instead of (1 - p_t)^gamma": focal_pt_to_the_gamma,
        "mean over all positions including ignored ones": focal_mean_over_all_positions,
        "log of the stable softmax (underflow)": focal_log_of_stable_softmax,
        "weight from the top class, not the target": focal_weight_from_top_class,
        "calls F.cross_entropy": focal_calls_torch,
        "multiplies by the mask (0 * inf = nan at an ignored row of -inf)": focal_multiplies_by_the_mask,
        "float64 rounded to float32": focal_always_float32,
    }, right={
        "float64 arithmetic": focal_float64,
        "logsumexp and expm1": focal_via_lse_and_expm1,
    }),
}

mutant_tests(globals())
