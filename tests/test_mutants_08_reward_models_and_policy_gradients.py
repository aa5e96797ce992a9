"""Notebook 08's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests

ASSIGNMENT = "08_reward_models_and_policy_gradients"


# ------------------------------------------------------------------ shared pieces (elementary torch only)

def _up(x):
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _nls(t):
    """-log sigmoid(t), stable: one smooth branch per sign, selected, each fed t on its own side (so the gradient is
    right at t = 0 too, and the branch not taken cannot overflow)."""
    up = t >= 0
    t_pos, t_neg = torch.where(up, t, 0.0), torch.where(up, 0.0, t)
    return torch.where(up, torch.log1p(torch.exp(-t_pos)), -t_neg + torch.log1p(torch.exp(t_neg)))


def _max_and_abs(t):
    """-log sigmoid(t) as max(-t, 0) + log1p(exp(-|t|)): right values, but autograd's gradient at t = 0 is -1, not
    -1/2 (it differentiates max and |t| apart at their shared kink)."""
    return torch.clamp(-t, min=0) + torch.log1p(torch.exp(-t.abs()))


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


# ------------------------------------------------------------------ bradley_terry_loss

def bt_sign_flipped(r_chosen, r_rejected, reduction="mean"):
    return _reduce(_nls(_up(r_rejected) - _up(r_chosen)), reduction)


def bt_log_of_sigmoid(r_chosen, r_rejected, reduction="mean"):
    return _reduce(-torch.log(torch.sigmoid(_up(r_chosen) - _up(r_rejected))), reduction)


def bt_log1p_exp_overflows(r_chosen, r_rejected, reduction="mean"):
    return _reduce(torch.log1p(torch.exp(_up(r_rejected) - _up(r_chosen))), reduction)


def bt_calls_logsigmoid(r_chosen, r_rejected, reduction="mean"):
    return _reduce(-F.logsigmoid(_up(r_chosen) - _up(r_rejected)), reduction)


def bt_always_mean(r_chosen, r_rejected, reduction="mean"):
    return _nls(_up(r_chosen) - _up(r_rejected)).mean()


def bt_in_half_precision(r_chosen, r_rejected, reduction="mean"):
    return _reduce(_nls(r_chosen - r_rejected), reduction)


def bt_max_and_abs_through_autograd(r_chosen, r_rejected, reduction="mean"):
    return _reduce(_max_and_abs(_up(r_chosen) - _up(r_rejected)), reduction)


def bt_reduces_the_first_axis(r_chosen, r_rejected, reduction="mean"):
    loss = _nls(_up(r_chosen) - _up(r_rejected))
    if reduction == "none":
        return loss
    return loss.sum(0) if reduction == "sum" else loss.mean(0)


def bt_at_least_1d(r_chosen, r_rejected, reduction="mean"):
    return _reduce(_nls(torch.atleast_1d(_up(r_chosen) - _up(r_rejected))), reduction)


def bt_empty_mean_is_zero(r_chosen, r_rejected, reduction="mean"):
    loss = _nls(_up(r_chosen) - _up(r_rejected))
    return loss.sum() / max(loss.numel(), 1) if reduction == "mean" else _reduce(loss, reduction)


def bt_via_where(r_chosen, r_rejected, reduction="mean"):
    d = _up(r_chosen) - _up(r_rejected)
    loss = torch.where(d > 0, torch.log1p(torch.exp(-d.clamp_min(0))), -d + torch.log1p(torch.exp(d.clamp_max(0))))
    return _reduce(loss, reduction)


def bt_log_instead_of_log1p(r_chosen, r_rejected, reduction="mean"):
    d = _up(r_chosen) - _up(r_rejected)            # also max and |d| through autograd: gradient -1 at d = 0
    return _reduce((-d).clamp_min(0) + torch.log(1 + torch.exp(-d.abs())), reduction)


def bt_logsumexp_shifted_by_hand(r_chosen, r_rejected, reduction="mean"):
    d = _up(r_chosen) - _up(r_rejected)
    m = torch.clamp(-d, min=0)                     # the larger exponent of (0, -d): a shift the gradient cancels
    return _reduce(m + torch.log(torch.exp(-m) + torch.exp(-d - m)), reduction)


# ------------------------------------------------------------------ optimal_policy

def _log_ref(ref):
    return torch.where(ref > 0, torch.log(torch.where(ref > 0, ref, 1.0)), torch.full_like(ref, -math.inf))


def op_naive_exp(ref_probs, rewards, beta):
    w = _up(ref_probs) * torch.exp(_up(rewards) / beta)
    return w / w.sum(-1, keepdim=True)


def op_r_times_beta(ref_probs, rewards, beta):
    return torch.softmax(_log_ref(_up(ref_probs)) + _up(rewards) * beta, -1)


def op_not_normalised(ref_probs, rewards, beta):
    z = _log_ref(_up(ref_probs)) + _up(rewards) / beta
    return torch.exp(z - z.amax(-1, keepdim=True))


def op_ignores_reference(ref_probs, rewards, beta):
    return torch.softmax(_up(rewards) / beta, -1)


def op_normalised_over_prompts(ref_probs, rewards, beta):
    return torch.softmax(_log_ref(_up(ref_probs)) + _up(rewards) / beta, 0)


def op_reference_times_softmax(ref_probs, rewards, beta):
    return _up(ref_probs) * torch.softmax(_up(rewards) / beta, -1)


def op_log_zero_clamped(ref_probs, rewards, beta):
    return torch.softmax(torch.log(_up(ref_probs).clamp_min(1e-30)) + _up(rewards) / beta, -1)


def op_upcasts_bfloat16_only(ref_probs, rewards, beta):
    ref, r = (x.float() if x.dtype == torch.bfloat16 else x for x in (ref_probs, rewards))
    return torch.softmax(_log_ref(ref) + r / beta, -1)


def op_log_softmax_exp(ref_probs, rewards, beta):
    z = _log_ref(_up(ref_probs)) + _up(rewards) / beta
    return torch.exp(torch.log_softmax(z, dim=-1))


def op_max_subtracted_by_hand(ref_probs, rewards, beta):
    ref, r = _up(ref_probs), _up(rewards)
    z = torch.where(ref > 0, r / beta, torch.full_like(r, -math.inf))
    w = ref * torch.exp(z - z.amax(-1, keepdim=True))
    return w / w.sum(-1, keepdim=True)


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
}

mutant_tests(globals())
