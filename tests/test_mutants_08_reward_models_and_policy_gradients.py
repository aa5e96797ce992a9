"""Notebook 08's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, neg_log_sigmoid, neg_log_sigmoid_clamped, reduce, upcast

ASSIGNMENT = "08_reward_models_and_policy_gradients"


# ------------------------------------------------------------------ bradley_terry_loss

def bt_sign_flipped(r_chosen, r_rejected, reduction="mean"):
    return reduce(neg_log_sigmoid(upcast(r_rejected) - upcast(r_chosen)), reduction)


def bt_log_of_sigmoid(r_chosen, r_rejected, reduction="mean"):
    return reduce(-torch.log(torch.sigmoid(upcast(r_chosen) - upcast(r_rejected))), reduction)


def bt_log1p_exp_overflows(r_chosen, r_rejected, reduction="mean"):
    return reduce(torch.log1p(torch.exp(upcast(r_rejected) - upcast(r_chosen))), reduction)


def bt_calls_logsigmoid(r_chosen, r_rejected, reduction="mean"):
    return reduce(-F.logsigmoid(upcast(r_chosen) - upcast(r_rejected)), reduction)


def bt_always_mean(r_chosen, r_rejected, reduction="mean"):
    return neg_log_sigmoid(upcast(r_chosen) - upcast(r_rejected)).mean()


def bt_in_half_precision(r_chosen, r_rejected, reduction="mean"):
    return reduce(neg_log_sigmoid(r_chosen - r_rejected), reduction)


def bt_max_and_abs_through_autograd(r_chosen, r_rejected, reduction="mean"):
    return reduce(neg_log_sigmoid_clamped(upcast(r_chosen) - upcast(r_rejected)), reduction)


def bt_reduces_the_first_axis(r_chosen, r_rejected, reduction="mean"):
    loss = neg_log_sigmoid(upcast(r_chosen) - upcast(r_rejected))
    if reduction == "none":
        return loss
    return loss.sum(0) if reduction == "sum" else loss.mean(0)


def bt_at_least_1d(r_chosen, r_rejected, reduction="mean"):
    return reduce(neg_log_sigmoid(torch.atleast_1d(upcast(r_chosen) - upcast(r_rejected))), reduction)


def bt_empty_mean_is_zero(r_chosen, r_rejected, reduction="mean"):
    loss = neg_log_sigmoid(upcast(r_chosen) - upcast(r_rejected))
    return loss.sum() / max(loss.numel(), 1) if reduction == "mean" else reduce(loss, reduction)


def bt_via_where(r_chosen, r_rejected, reduction="mean"):
    d = upcast(r_chosen) - upcast(r_rejected)
    loss = torch.where(d > 0, torch.log1p(torch.exp(-d.clamp_min(0))), -d + torch.log1p(torch.exp(d.clamp_max(0))))
    return reduce(loss, reduction)


def bt_log_instead_of_log1p(r_chosen, r_rejected, reduction="mean"):
    d = upcast(r_chosen) - upcast(r_rejected)            # also max and |d| through autograd: gradient -1 at d = 0
    return reduce((-d).clamp_min(0) + torch.log(1 + torch.exp(-d.abs())), reduction)


def bt_logsumexp_shifted_by_hand(r_chosen, r_rejected, reduction="mean"):
    d = upcast(r_chosen) - upcast(r_rejected)
    m = torch.clamp(-d, min=0)                     # the larger exponent of (0, -d): a shift the gradient cancels
    return reduce(m + torch.log(torch.exp(-m) + torch.exp(-d - m)), reduction)


# ------------------------------------------------------------------ optimal_policy

def _log_ref(ref):
    return torch.where(ref > 0, torch.log(torch.where(ref > 0, ref, 1.0)), torch.full_like(ref, -math.inf))


def op_naive_exp(ref_probs, rewards, beta):
    w = upcast(ref_probs) * torch.exp(upcast(rewards) / beta)
    return w / w.sum(-1, keepdim=True)


def op_r_times_beta(ref_probs, rewards, beta):
    return torch.softmax(_log_ref(upcast(ref_probs)) + upcast(rewards) * beta, -1)


def op_not_normalised(ref_probs, rewards, beta):
    z = _log_ref(upcast(ref_probs)) + upcast(rewards) / beta
    return torch.exp(z - z.amax(-1, keepdim=True))


def op_ignores_reference(ref_probs, rewards, beta):
    return torch.softmax(upcast(rewards) / beta, -1)


def op_normalised_over_prompts(ref_probs, rewards, beta):
    return torch.softmax(_log_ref(upcast(ref_probs)) + upcast(rewards) / beta, 0)


def op_reference_times_softmax(ref_probs, rewards, beta):
    return upcast(ref_probs) * torch.softmax(upcast(rewards) / beta, -1)


def op_log_zero_clamped(ref_probs, rewards, beta):
    return torch.softmax(torch.log(upcast(ref_probs).clamp_min(1e-30)) + upcast(rewards) / beta, -1)


def op_upcasts_bfloat16_only(ref_probs, rewards, beta):
    ref, r = (x.float() if x.dtype == torch.bfloat16 else x for x in (ref_probs, rewards))
    return torch.softmax(_log_ref(ref) + r / beta, -1)


def op_log_softmax_exp(ref_probs, rewards, beta):
    z = _log_ref(upcast(ref_probs)) + upcast(rewards) / beta
    return torch.exp(torch.log_softmax(z, dim=-1))


def op_max_subtracted_by_hand(ref_probs, rewards, beta):
    ref, r = upcast(ref_probs), upcast(rewards)
    z = torch.where(ref > 0, r / beta, torch.full_like(r, -math.inf))
    w = ref * torch.exp(z - z.amax(-1, keepdim=True))
    return w / w.sum(-1, keepdim=True)


# ------------------------------------------------------------------ reinforce_loss

def _baseline(baseline):
    return upcast(baseline) if isinstance(baseline, torch.Tensor) else (0.0 if baseline is None else baseline)


def rf_rewards_not_detached(logprobs, rewards, baseline=None):
    b = _baseline(baseline)
    b = b.detach() if isinstance(b, torch.Tensor) else b
    return -((upcast(rewards) - b) * upcast(logprobs)).mean()


def rf_baseline_not_detached(logprobs, rewards, baseline=None):
    return -((upcast(rewards).detach() - _baseline(baseline)) * upcast(logprobs)).mean()


def rf_sum_not_mean(logprobs, rewards, baseline=None):
    return -((upcast(rewards) - _baseline(baseline)).detach() * upcast(logprobs)).sum()


def rf_sign_flipped(logprobs, rewards, baseline=None):
    return ((upcast(rewards) - _baseline(baseline)).detach() * upcast(logprobs)).mean()


def rf_baseline_added(logprobs, rewards, baseline=None):
    return -((upcast(rewards) + _baseline(baseline)).detach() * upcast(logprobs)).mean()


def rf_baseline_ignored(logprobs, rewards, baseline=None):
    return -(upcast(rewards).detach() * upcast(logprobs)).mean()


def rf_mean_times_mean(logprobs, rewards, baseline=None):
    return -(upcast(rewards) - _baseline(baseline)).detach().mean() * upcast(logprobs).mean()


def rf_in_half_precision(logprobs, rewards, baseline=None):
    b = 0.0 if baseline is None else baseline
    return -((rewards - b).detach() * logprobs).mean()


def rf_empty_gives_zero(logprobs, rewards, baseline=None):
    terms = (upcast(rewards) - _baseline(baseline)).detach() * upcast(logprobs)
    return -terms.sum() / max(terms.numel(), 1)


def rf_under_no_grad_weights(logprobs, rewards, baseline=None):
    with torch.no_grad():
        weights = upcast(rewards) - _baseline(baseline)
    return -(weights * upcast(logprobs)).sum() / upcast(logprobs).numel()


def rf_dot_product(logprobs, rewards, baseline=None):
    lp = upcast(logprobs)
    weights = (upcast(rewards) - _baseline(baseline)).detach().expand(lp.shape).to(lp.dtype)
    return -torch.dot(weights, lp) / lp.numel()


# ------------------------------------------------------------------ rloo_advantages

def _shifted(rewards):
    r = upcast(rewards.detach())
    return r - r[:, :1]


def rloo_group_mean(rewards):
    d = _shifted(rewards)
    return d - d.mean(-1, keepdim=True)


def rloo_over_prompts(rewards):
    d = upcast(rewards.detach())
    k = d.shape[1]
    return (d - d.mean(0, keepdim=True)) * (k / (k - 1))


def rloo_divided_by_k(rewards):
    d = _shifted(rewards)
    k = d.shape[1]
    return d - (d.sum(-1, keepdim=True) - d) / k


def rloo_sign_flipped(rewards):
    d = _shifted(rewards)
    k = d.shape[1]
    return (d.sum(-1, keepdim=True) - d) / (k - 1) - d


def rloo_naive_centring(rewards):
    r = upcast(rewards.detach())
    k = r.shape[1]
    return (r - r.mean(-1, keepdim=True)) * (k / (k - 1))


def rloo_std_normalised(rewards):
    d = _shifted(rewards)
    k = d.shape[1]
    a = (d - d.mean(-1, keepdim=True)) * (k / (k - 1))
    return torch.where(a == 0, 0.0, a / (d.std(-1, keepdim=True) + 1e-4))


def rloo_in_half_precision(rewards):
    r = rewards.detach()
    d = r - r[:, :1]
    k = r.shape[1]
    return (d - d.mean(-1, keepdim=True)) * (k / (k - 1))


def rloo_keeps_the_graph(rewards):
    r = upcast(rewards)
    d = r - r[:, :1]
    k = r.shape[1]
    return (d - d.mean(-1, keepdim=True)) * (k / (k - 1))


def rloo_leave_one_out_sum(rewards):
    d = _shifted(rewards)
    return d - (d.sum(-1, keepdim=True) - d)


def rloo_mean_of_the_others(rewards):
    d = _shifted(rewards)
    k = d.shape[1]
    return d - (d.sum(-1, keepdim=True) - d) / (k - 1)


def rloo_by_a_loop_over_samples(rewards):
    d = _shifted(rewards)
    k = d.shape[1]
    columns = [d[:, j] - torch.cat([d[:, :j], d[:, j + 1:]], 1).mean(-1) for j in range(k)]
    return torch.stack(columns, 1) if columns else d


# ------------------------------------------------------------------ grpo_advantages

def _ga(rewards, scale_by_std, eps, correction=1, eps_inside=False, exact=True, zero_where_flat=True, over=-1):
    r = upcast(rewards.detach())
    d = r - r[:, :1] if exact else r
    centred = d - d.mean(over, keepdim=True)
    if not scale_by_std:
        return centred
    var = (centred ** 2).sum(over, keepdim=True) / (r.shape[over] - correction)
    scaled = centred / (var + eps).sqrt() if eps_inside else centred / (var.sqrt() + eps)
    return torch.where(var == 0, 0.0, scaled) if zero_where_flat else scaled


def ga_biased_std(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, eps, correction=0)


def ga_no_eps(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, 0.0)


def ga_eps_inside_the_sqrt(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, eps, eps_inside=True)


def ga_std_over_the_batch(rewards, scale_by_std=True, eps=1e-4):
    r = upcast(rewards.detach())
    centred = (r - r[:, :1]) - (r - r[:, :1]).mean(-1, keepdim=True)
    if not scale_by_std:
        return centred
    return centred / (r.std() + eps)


def ga_mean_over_the_batch(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, eps, exact=False, over=0)


def ga_scale_ignored(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, True, eps)


def ga_naive_centring(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, eps, exact=False)


def ga_nan_for_flat_rows(rewards, scale_by_std=True, eps=1e-4):
    return _ga(rewards, scale_by_std, eps, zero_where_flat=False)


def ga_in_half_precision(rewards, scale_by_std=True, eps=1e-4):
    r = rewards.detach()
    d = r - r[:, :1]
    centred = d - d.mean(-1, keepdim=True)
    if not scale_by_std:
        return centred
    std = centred.float().std(-1, keepdim=True).to(r.dtype)
    return torch.where(std == 0, 0.0, centred / (std + eps))


def ga_torch_std(rewards, scale_by_std=True, eps=1e-4):
    d = _shifted(rewards)
    centred = d - d.mean(-1, keepdim=True)
    if not scale_by_std:
        return centred
    std = centred.std(-1, keepdim=True)
    return torch.where(std == 0, 0.0, centred / (std + eps))


def ga_var_mean(rewards, scale_by_std=True, eps=1e-4):
    d = _shifted(rewards)
    if not scale_by_std:
        return d - d.mean(-1, keepdim=True)
    var, mean = torch.var_mean(d, -1, correction=1, keepdim=True)
    return torch.where(var == 0, 0.0, (d - mean) / (var.sqrt() + eps))


# ------------------------------------------------------------------ clipped_surrogate and grpo_loss

def _log_ratio(lp, old):
    return torch.where(torch.isneginf(lp) & torch.isneginf(old), 0.0, lp - old)


def _clip_by_sign(log_ratio, adv, eps):
    bounded = torch.where(adv >= 0, log_ratio.clamp(max=math.log1p(eps)), log_ratio.clamp(min=math.log1p(-eps)))
    return -adv * torch.exp(bounded)


def _clip_by_where(log_ratio, adv, eps):
    """The same, another way: the tokens where the clip binds get the constant -A (1 +- eps) and no ratio at all."""
    high = (adv >= 0) & (log_ratio > math.log1p(eps))
    low = (adv < 0) & (log_ratio < math.log1p(-eps))
    rho = torch.exp(torch.where(high | low, 0.0, log_ratio))
    return torch.where(high, -adv * (1 + eps), torch.where(low, -adv * (1 - eps), -adv * rho))


def _naive(rho, adv, eps, use="min"):
    unclipped, clipped = rho * adv, rho.clamp(1 - eps, 1 + eps) * adv
    return -(torch.minimum(unclipped, clipped) if use == "min" else torch.maximum(unclipped, clipped))


def _cs(per_token):
    def clipped_surrogate(logprobs, old_logprobs, advantages, clip_eps=0.2):
        lp, old, adv = upcast(logprobs), upcast(old_logprobs).detach(), upcast(advantages).detach()
        return per_token(lp, old, adv, clip_eps)
    return clipped_surrogate


cs_max_not_min = _cs(lambda lp, old, adv, eps: _naive(torch.exp(_log_ratio(lp, old).clamp(max=80)), adv, eps, "max"))
cs_clip_on_the_loss = _cs(lambda lp, old, adv, eps: -torch.minimum(
    torch.exp(_log_ratio(lp, old)) * adv, (torch.exp(_log_ratio(lp, old).clamp(max=80)) * adv).clamp(1 - eps, 1 + eps)))
cs_no_clip = _cs(lambda lp, old, adv, eps: -torch.exp(_log_ratio(lp, old)) * adv)
cs_exp_over_exp = _cs(lambda lp, old, adv, eps: _clip_by_sign(
    torch.where(torch.isneginf(lp) & torch.isneginf(old), 0.0, torch.log(torch.exp(lp) / torch.exp(old))), adv, eps))
cs_ratio_overflows = _cs(lambda lp, old, adv, eps: _naive(torch.exp(_log_ratio(lp, old)), adv, eps))
cs_log_ratio_clipped = _cs(lambda lp, old, adv, eps: -torch.minimum(
    torch.exp(_log_ratio(lp, old).clamp(max=80)) * adv, torch.exp(_log_ratio(lp, old).clamp(-eps, eps)) * adv))
cs_masked_gives_nan = _cs(lambda lp, old, adv, eps: _clip_by_sign(lp - old, adv, eps))
cs_sign_flipped = _cs(lambda lp, old, adv, eps: -_clip_by_sign(_log_ratio(lp, old), adv, eps))
cs_by_where = _cs(lambda lp, old, adv, eps: _clip_by_where(_log_ratio(lp, old), adv, eps))


def cs_advantages_not_detached(logprobs, old_logprobs, advantages, clip_eps=0.2):
    return _clip_by_sign(_log_ratio(upcast(logprobs), upcast(old_logprobs).detach()), upcast(advantages), clip_eps)


def cs_old_not_detached(logprobs, old_logprobs, advantages, clip_eps=0.2):
    return _clip_by_sign(_log_ratio(upcast(logprobs), upcast(old_logprobs)), upcast(advantages).detach(), clip_eps)


def cs_in_half_precision(logprobs, old_logprobs, advantages, clip_eps=0.2):
    return _clip_by_sign(_log_ratio(logprobs, old_logprobs.detach()), advantages.detach(), clip_eps)


def cs_min_of_products_with_a_safe_ratio(logprobs, old_logprobs, advantages, clip_eps=0.2):
    # the textbook -min(rho A, clip(rho) A), made safe: where the clip binds, the ratio is never exponentiated
    lp, old, adv = upcast(logprobs), upcast(old_logprobs).detach(), upcast(advantages).detach()
    log_ratio = _log_ratio(lp, old)
    binds = ((adv >= 0) & (log_ratio > math.log1p(clip_eps))) | ((adv < 0) & (log_ratio < math.log1p(-clip_eps)))
    rho = torch.exp(torch.where(binds, 0.0, log_ratio))
    textbook = -torch.minimum(rho * adv, rho.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return torch.where(binds, -adv * torch.where(adv >= 0, 1 + clip_eps, 1 - clip_eps), textbook)


def _gl(per_token=_clip_by_sign, select_inputs=True, multiply=False, reduce=None):
    def grpo_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, normalization="sequence", max_length=None):
        lp, old, adv = upcast(logprobs), upcast(old_logprobs).detach(), upcast(advantages).detach()[:, None]
        if select_inputs:
            lp, old = torch.where(mask, lp, 0.0), torch.where(mask, old, 0.0)
        per = per_token(lp - old, adv, clip_eps)
        losses = per * mask if multiply else torch.where(mask, per, 0.0)
        return (reduce or _reduce_grpo)(losses, mask, normalization, max_length)
    return grpo_loss


def _reduce_grpo(losses, mask, normalization, max_length):
    B, T = mask.shape
    if normalization == "token":
        return losses.sum() / mask.sum()
    if normalization == "constant":
        return losses.sum() / (B * (T if max_length is None else max_length))
    counts = mask.sum(-1)
    return (losses.sum(-1) / counts.clamp(min=1)).sum() / (counts > 0).sum()


def _divides_by_T(losses, mask, normalization, max_length):
    if normalization == "sequence":
        return (losses.sum(-1) / mask.shape[1]).mean()
    return _reduce_grpo(losses, mask, normalization, max_length)


def _mean_over_every_response(losses, mask, normalization, max_length):
    if normalization == "sequence":   # TRL's division by B: an empty response still counts in the mean
        return (losses.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    return _reduce_grpo(losses, mask, normalization, max_length)


def _naive_sequence_mean(losses, mask, normalization, max_length):
    if normalization == "sequence":
        return (losses.sum(-1) / mask.sum(-1)).mean()
    return _reduce_grpo(losses, mask, normalization, max_length)


def _swapped(losses, mask, normalization, max_length):
    return _reduce_grpo(losses, mask, {"sequence": "token", "token": "sequence"}.get(normalization, normalization),
                        max_length)


def _constant_ignores_max_length(losses, mask, normalization, max_length):
    return _reduce_grpo(losses, mask, normalization, None)


def _by_indexing(losses, mask, normalization, max_length):
    B, T = mask.shape
    if normalization == "token":
        return losses[mask].sum() / mask.sum()
    if normalization == "constant":
        return losses[mask].sum() / (B * (T if max_length is None else max_length))
    means = [losses[b][mask[b]].mean() for b in range(B) if mask[b].any()]
    return torch.stack(means).mean() if means else losses.sum() / 0.0


gl_divides_by_T = _gl(reduce=_divides_by_T)
gl_multiplies_by_the_mask = _gl(select_inputs=False, multiply=True)
gl_selects_the_output_only = _gl(per_token=_clip_by_where, select_inputs=False)
gl_empty_response_counted = _gl(reduce=_mean_over_every_response)
gl_empty_response_nan = _gl(reduce=_naive_sequence_mean)
gl_token_and_sequence_swapped = _gl(reduce=_swapped)
gl_constant_ignores_max_length = _gl(reduce=_constant_ignores_max_length)
gl_max_not_min = _gl(per_token=lambda lr, adv, eps: _naive(torch.exp(lr.clamp(max=80)), adv, eps, "max"))
gl_no_clip = _gl(per_token=lambda lr, adv, eps: -torch.exp(lr) * adv)
gl_ratio_overflows = _gl(per_token=lambda lr, adv, eps: _naive(torch.exp(lr), adv, eps))
gl_clip_on_the_loss = _gl(per_token=lambda lr, adv, eps: -torch.minimum(
    torch.exp(lr) * adv, (torch.exp(lr.clamp(max=80)) * adv).clamp(1 - eps, 1 + eps)))
gl_by_where_and_indexing = _gl(per_token=_clip_by_where, reduce=_by_indexing)


def gl_exp_over_exp(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, normalization="sequence", max_length=None):
    lp, old = upcast(logprobs), upcast(old_logprobs).detach()
    lp, old = torch.where(mask, lp, 0.0), torch.where(mask, old, 0.0)
    adv = upcast(advantages).detach()[:, None]
    rho = torch.exp(lp) / torch.exp(old)
    losses = torch.where(mask, _naive(rho, adv, clip_eps), 0.0)
    return _reduce_grpo(losses, mask, normalization, max_length)


def gl_on_a_loop_over_responses(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, normalization="sequence",
                                max_length=None):
    lp, old, adv = upcast(logprobs), upcast(old_logprobs).detach(), upcast(advantages).detach()
    B, T = lp.shape
    sums, kept = [], []
    for b in range(B):
        m = mask[b]
        per = _clip_by_sign(lp[b][m] - old[b][m], adv[b], clip_eps)
        sums.append(per.sum())
        kept.append(m.sum())
    total = torch.stack(sums).sum() if sums else lp.sum() * 0.0
    if normalization == "token":
        return total / mask.sum()
    if normalization == "constant":
        return total / (B * (T if max_length is None else max_length))
    means = [s / n for s, n in zip(sums, kept) if n > 0]
    return torch.stack(means).mean() if means else total / 0.0


# ------------------------------------------------------------------ ppo_value_loss

def _vl(combine=torch.maximum, half=0.5, reduce="mean", clip_around="old", detach=True):
    def ppo_value_loss(values, old_values, returns, clip_eps=0.2):
        v, old, ret = upcast(values), upcast(old_values), upcast(returns)
        if detach:
            old, ret = old.detach(), ret.detach()
        centre = old if clip_around == "old" else ret
        clipped = centre + (v - centre).clamp(-clip_eps, clip_eps)
        per = combine((v - ret) ** 2, (clipped - ret) ** 2)
        return half * (per.mean() if reduce == "mean" else per.sum())
    return ppo_value_loss


vl_min_not_max = _vl(combine=torch.minimum)
vl_no_half = _vl(half=1.0)
vl_sum_not_mean = _vl(reduce="sum")
vl_clipped_around_the_returns = _vl(clip_around="returns")
vl_unclipped_only = _vl(combine=lambda unclipped, clipped: unclipped)
vl_clipped_only = _vl(combine=lambda unclipped, clipped: clipped)
vl_targets_not_detached = _vl(detach=False)


def vl_max_of_the_means(values, old_values, returns, clip_eps=0.2):
    v, old, ret = upcast(values), upcast(old_values).detach(), upcast(returns).detach()
    clipped = old + (v - old).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.maximum(((v - ret) ** 2).mean(), ((clipped - ret) ** 2).mean())


def vl_in_half_precision(values, old_values, returns, clip_eps=0.2):
    v, old, ret = values, old_values.detach(), returns.detach()
    clipped = old + (v - old).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.maximum((v - ret) ** 2, (clipped - ret) ** 2).mean()


def vl_by_where_and_stack(values, old_values, returns, clip_eps=0.2):
    v, old, ret = upcast(values), upcast(old_values).detach(), upcast(returns).detach()
    clipped = torch.where(v > old + clip_eps, old + clip_eps, torch.where(v < old - clip_eps, old - clip_eps, v))
    both = torch.stack([(v - ret) ** 2, (clipped - ret) ** 2])
    return both.amax(0).sum() / (2 * v.numel()) if v.numel() else both.sum() / 0.0


# ------------------------------------------------------------------ gae

def _gae(step, returns_from="advantages"):
    def gae(rewards, values, gamma=1.0, lam=0.95):
        r, v = upcast(rewards).detach(), upcast(values).detach()
        deltas = r + gamma * v[:, 1:] - v[:, :-1]
        advantages, running = torch.zeros_like(deltas), r.new_zeros(r.shape[0])
        for t in reversed(range(r.shape[1])):
            running = step(deltas[:, t], running, gamma, lam, r[:, t])
            advantages[:, t] = running
        if returns_from == "next value":
            return advantages, advantages + v[:, 1:]
        return advantages, advantages + v[:, :-1]
    return gae


gae_gamma_but_no_lambda = _gae(lambda delta, running, gamma, lam, r: delta + gamma * running)
gae_lambda_but_no_gamma = _gae(lambda delta, running, gamma, lam, r: delta + lam * running)
gae_returns_from_the_next_value = _gae(lambda delta, running, gamma, lam, r: delta + gamma * lam * running,
                                       returns_from="next value")


def gae_no_bootstrap(rewards, values, gamma=1.0, lam=0.95):
    v = upcast(values).detach().clone()
    v[:, -1] = 0.0                                   # the last value dropped: every episode taken as finished
    return _gae(lambda delta, running, gamma, lam, r: delta + gamma * lam * running)(rewards, v, gamma, lam)


def gae_off_by_one(rewards, values, gamma=1.0, lam=0.95):
    r, v = upcast(rewards).detach(), upcast(values).detach()
    deltas = r + gamma * v[:, :-1] - v[:, 1:]        # V_t and V_{t+1} swapped
    advantages, running = torch.zeros_like(deltas), r.new_zeros(r.shape[0])
    for t in reversed(range(r.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + v[:, :-1]


def gae_forward_recursion(rewards, values, gamma=1.0, lam=0.95):
    r, v = upcast(rewards).detach(), upcast(values).detach()
    deltas = r + gamma * v[:, 1:] - v[:, :-1]
    advantages, running = torch.zeros_like(deltas), r.new_zeros(r.shape[0])
    for t in range(r.shape[1]):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + v[:, :-1]


def gae_monte_carlo_returns(rewards, values, gamma=1.0, lam=0.95):
    r, v = upcast(rewards).detach(), upcast(values).detach()
    advantages, _ = _gae(lambda delta, running, gamma, lam, rt: delta + gamma * lam * running)(r, v, gamma, lam)
    returns, running = torch.zeros_like(r), v[:, -1]
    for t in reversed(range(r.shape[1])):
        running = r[:, t] + gamma * running
        returns[:, t] = running
    return advantages, returns


def gae_keeps_the_graph(rewards, values, gamma=1.0, lam=0.95):
    r, v = upcast(rewards), upcast(values)
    deltas = r + gamma * v[:, 1:] - v[:, :-1]
    advantages, running = torch.zeros_like(deltas), deltas.new_zeros(deltas.shape[0])
    for t in reversed(range(r.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running                   # writing into a fresh tensor keeps the values' graph
    return advantages, advantages + v[:, :-1]


def gae_in_half_precision(rewards, values, gamma=1.0, lam=0.95):
    r, v = rewards.detach(), values.detach()
    deltas = r + gamma * v[:, 1:] - v[:, :-1]
    advantages, running = torch.zeros_like(deltas), r.new_zeros(r.shape[0])
    for t in reversed(range(r.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + v[:, :-1]


def gae_by_a_matrix_of_powers(rewards, values, gamma=1.0, lam=0.95):
    r, v = upcast(rewards).detach(), upcast(values).detach()
    deltas = r + gamma * v[:, 1:] - v[:, :-1]
    T = r.shape[1]
    steps = torch.arange(T)
    ahead = (steps[None, :] - steps[:, None]).to(r.dtype)           # l = s - t
    weights = torch.where(ahead >= 0, (gamma * lam) ** ahead.clamp(min=0), 0.0)   # (gamma lam)^l for s >= t
    advantages = deltas @ weights.T
    return advantages, advantages + v[:, :-1]


# ------------------------------------------------------------------ kl_estimators

def _k3_series(x):
    small = x.abs() < 0.1
    xs = torch.where(small, x, 0.0)
    series = xs * xs * (1 / 2 + xs * (1 / 6 + xs * (1 / 24 + xs * (1 / 120 + xs * (1 / 720 + xs / 5040)))))
    return torch.where(small, series, torch.expm1(x) - x)


def _kl(k3=_k3_series, sign=1.0, k2_half=True, order=(0, 1, 2), detach=True, masked=True, up=True):
    def kl_estimators(logprobs, ref_logprobs):
        lp, ref = (upcast(logprobs), upcast(ref_logprobs)) if up else (logprobs, ref_logprobs)
        ref = ref.detach() if detach else ref
        d = sign * (ref - lp)
        x = torch.where(torch.isneginf(lp) & torch.isneginf(ref), 0.0, d) if masked else d
        out = (-x, x * x / 2 if k2_half else x * x, k3(x))
        return tuple(out[i] for i in order)
    return kl_estimators


kl_k3_of_the_reverse_ratio = _kl(k3=lambda x: _k3_series(-x))
kl_log_ratio_the_other_way = _kl(sign=-1.0)
kl_k2_without_the_half = _kl(k2_half=False)
kl_k3_cancels = _kl(k3=lambda x: torch.exp(x) - 1 - x)
kl_k3_by_expm1_only = _kl(k3=lambda x: torch.expm1(x) - x)
kl_k3_plus_log_r = _kl(k3=lambda x: torch.exp(x) - 1 + x)
kl_ref_not_detached = _kl(detach=False)
kl_masked_gives_nan = _kl(masked=False)
kl_order_k3_k2_k1 = _kl(order=(2, 1, 0))
kl_in_half_precision = _kl(up=False)


def kl_k1_sign_flipped(logprobs, ref_logprobs):
    k1, k2, k3 = _kl()(logprobs, ref_logprobs)
    return -k1, k2, k3


def kl_series_to_x12_below_a_quarter(logprobs, ref_logprobs):
    lp, ref = upcast(logprobs), upcast(ref_logprobs).detach()
    x = torch.where(torch.isneginf(lp) & torch.isneginf(ref), 0.0, ref - lp)
    small = x.abs() < 0.25
    xs = torch.where(small, x, 0.0)
    series, term = torch.zeros_like(xs), xs * xs / 2
    for n in range(3, 13):                     # x^2/2! + x^3/3! + ... + x^12/12!, term by term
        series = series + term
        term = term * xs / n
    return -x, x * x / 2, torch.where(small, series, torch.expm1(x) - x)


def kl_k3_in_float64(logprobs, ref_logprobs):
    lp, ref = upcast(logprobs), upcast(ref_logprobs).detach()
    x = torch.where(torch.isneginf(lp) & torch.isneginf(ref), 0.0, ref - lp)
    wide = x.double()
    small = wide.abs() < 1e-3                    # float64 cancels too, but only below 1e-3 does it matter at rtol 1e-5
    ws = torch.where(small, wide, 0.0)
    k3 = torch.where(small, ws * ws / 2 + ws ** 3 / 6 + ws ** 4 / 24, torch.expm1(wide) - wide)
    return -x, x * x / 2, k3.to(x.dtype)


EXERCISES = {
    "test_bradley_terry_loss": Exercise(
        "bradley_terry_loss", differentiable=True,
        wrong={"sign flipped": bt_sign_flipped, "log of sigmoid": bt_log_of_sigmoid,
               "log1p(exp(-d)) overflows": bt_log1p_exp_overflows, "calls F.logsigmoid": bt_calls_logsigmoid,
               "always the mean": bt_always_mean, "half precision arithmetic": bt_in_half_precision,
               "max(-d, 0) + log1p(exp(-|d|)) through autograd (gradient -1 at d = 0)": bt_max_and_abs_through_autograd,
               "max(-d, 0) + log(1 + exp(-|d|)) (gradient -1 at d = 0)": bt_log_instead_of_log1p,
               "reduced over the first axis only ((4, 6) gives (6,))": bt_reduces_the_first_axis,
               "atleast_1d: a 0-d pair's 'none' comes back (1,)": bt_at_least_1d,
               "an empty batch's mean gives 0, not nan": bt_empty_mean_is_zero},
        right={"two branches with where": bt_via_where,
               "logsumexp of (0, -d) shifted by hand": bt_logsumexp_shifted_by_hand}),
    "test_optimal_policy": Exercise(
        "optimal_policy",
        wrong={"naive exp overflows": op_naive_exp, "r times beta": op_r_times_beta,
               "not normalised": op_not_normalised, "reference ignored": op_ignores_reference,
               "normalised over prompts": op_normalised_over_prompts,
               "reference times softmax(r / beta)": op_reference_times_softmax,
               "log(0) clamped to log(1e-30)": op_log_zero_clamped,
               "float16 not upcast (only bfloat16)": op_upcasts_bfloat16_only},
        right={"exp of log_softmax": op_log_softmax_exp, "max subtracted by hand": op_max_subtracted_by_hand}),
    "test_reinforce_loss": Exercise(
        "reinforce_loss", differentiable=True,
        wrong={"rewards not detached": rf_rewards_not_detached, "baseline not detached": rf_baseline_not_detached,
               "sum, not mean": rf_sum_not_mean, "sign flipped (gradient ascent on the loss)": rf_sign_flipped,
               "baseline added": rf_baseline_added, "baseline ignored": rf_baseline_ignored,
               "mean of the weights times mean of the log-probs": rf_mean_times_mean,
               "half precision arithmetic": rf_in_half_precision, "N = 0 gives 0, not nan": rf_empty_gives_zero},
        right={"weights under no_grad, sum / N": rf_under_no_grad_weights, "a dot product / N": rf_dot_product}),
    "test_rloo_advantages": Exercise(
        "rloo_advantages",
        wrong={"the group mean, itself included": rloo_group_mean, "mean over prompts (axis 0)": rloo_over_prompts,
               "the others' sum divided by k, not k - 1": rloo_divided_by_k, "sign flipped": rloo_sign_flipped,
               "the others' sum, not their mean": rloo_leave_one_out_sum,
               "r - mean(r) without the shift (not exact)": rloo_naive_centring,
               "divided by the group's std (GRPO's)": rloo_std_normalised,
               "half precision arithmetic": rloo_in_half_precision, "keeps the rewards' graph": rloo_keeps_the_graph},
        right={"r - mean of the others, written out": rloo_mean_of_the_others,
               "a loop over the samples": rloo_by_a_loop_over_samples}),
    "test_grpo_advantages": Exercise(
        "grpo_advantages",
        wrong={"biased std (divides by k)": ga_biased_std, "std without eps": ga_no_eps,
               "eps inside the square root": ga_eps_inside_the_sqrt,
               "one std for the whole batch": ga_std_over_the_batch,
               "mean and std over prompts (axis 0)": ga_mean_over_the_batch,
               "scale_by_std ignored": ga_scale_ignored, "r - mean(r) without the shift (not exact)": ga_naive_centring,
               "a row of equal rewards gives nan for eps = 0": ga_nan_for_flat_rows,
               "half precision arithmetic": ga_in_half_precision},
        right={"torch.std": ga_torch_std, "torch.var_mean": ga_var_mean}),
    "test_grpo_loss": Exercise(
        "grpo_loss", differentiable=True,
        wrong={"'sequence' divides by T, not each length": gl_divides_by_T,
               "multiplies by the mask (0 * nan)": gl_multiplies_by_the_mask,
               "selects the per-token losses only (nan gradient where masked)": gl_selects_the_output_only,
               "an empty response counted in the 'sequence' mean (TRL's / B)": gl_empty_response_counted,
               "an empty response gives 0 / 0": gl_empty_response_nan,
               "'token' and 'sequence' swapped": gl_token_and_sequence_swapped,
               "'constant' ignores max_length": gl_constant_ignores_max_length,
               "max instead of min": gl_max_not_min, "no clip": gl_no_clip,
               "exp(log-ratio) overflows (nan gradient)": gl_ratio_overflows,
               "clip applied to rho A instead of rho": gl_clip_on_the_loss,
               "ratio as exp(logprobs) / exp(old_logprobs)": gl_exp_over_exp},
        right={"the clip by where, the means by indexing": gl_by_where_and_indexing,
               "a loop over responses": gl_on_a_loop_over_responses}),
    "test_clipped_surrogate": Exercise(
        "clipped_surrogate", differentiable=True,
        wrong={"max instead of min": cs_max_not_min, "clip applied to rho A instead of rho": cs_clip_on_the_loss,
               "no clip": cs_no_clip, "ratio as exp(logprobs) / exp(old_logprobs)": cs_exp_over_exp,
               "exp(log-ratio) overflows (nan gradient)": cs_ratio_overflows,
               "the log-ratio clipped to +-eps": cs_log_ratio_clipped,
               "-inf - -inf = nan where masked": cs_masked_gives_nan, "sign flipped": cs_sign_flipped,
               "advantages not detached": cs_advantages_not_detached, "old log-probs not detached": cs_old_not_detached,
               "half precision arithmetic": cs_in_half_precision},
        right={"the clip by where": cs_by_where,
               "the textbook min, the clipped tokens never exponentiated": cs_min_of_products_with_a_safe_ratio}),
    "test_ppo_value_loss": Exercise(
        "ppo_value_loss", differentiable=True,
        wrong={"min instead of max": vl_min_not_max, "no 0.5": vl_no_half, "sum, not mean": vl_sum_not_mean,
               "clipped around the returns": vl_clipped_around_the_returns,
               "the unclipped error only": vl_unclipped_only, "the clipped error only": vl_clipped_only,
               "max of the two means": vl_max_of_the_means,
               "old values and returns not detached": vl_targets_not_detached,
               "half precision arithmetic": vl_in_half_precision},
        right={"the clip by where, the max by stack and amax": vl_by_where_and_stack}),
    "test_gae": Exercise(
        "gae",
        wrong={"gamma but no lambda": gae_gamma_but_no_lambda, "lambda but no gamma": gae_lambda_but_no_gamma,
               "returns from V_{t+1}": gae_returns_from_the_next_value, "the bootstrap value dropped": gae_no_bootstrap,
               "V_t and V_{t+1} swapped in delta": gae_off_by_one, "the recursion run forwards": gae_forward_recursion,
               "returns as the discounted rewards": gae_monte_carlo_returns,
               "keeps the values' graph": gae_keeps_the_graph, "half precision arithmetic": gae_in_half_precision},
        right={"sum_l (gamma lam)^l delta_{t+l} as a matrix product": gae_by_a_matrix_of_powers}),
    "test_kl_estimators": Exercise(
        "kl_estimators", differentiable=True,
        wrong={"k3 with exp(-log r)": kl_k3_of_the_reverse_ratio,
               "log r = logprobs - ref_logprobs": kl_log_ratio_the_other_way,
               "k2 without the 1/2": kl_k2_without_the_half, "k1 = log r": kl_k1_sign_flipped,
               "k3 as (r - 1) - log r (cancels)": kl_k3_cancels,
               "k3 as expm1(x) - x only (cancels)": kl_k3_by_expm1_only,
               "k3 = (r - 1) + log r": kl_k3_plus_log_r, "ref_logprobs not detached": kl_ref_not_detached,
               "-inf - -inf = nan where masked": kl_masked_gives_nan, "(k3, k2, k1)": kl_order_k3_k2_k1,
               "half precision arithmetic": kl_in_half_precision},
        right={"the series term by term, to x^12, below 0.25": kl_series_to_x12_below_a_quarter,
               "k3 computed in float64": kl_k3_in_float64}),
}

mutant_tests(globals())
