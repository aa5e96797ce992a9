"""Notebook 07's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, neg_log_sigmoid, reduce, upcast

ASSIGNMENT = "07_distillation_and_contrastive"


# ------------------------------------------------------------------ shared pieces (elementary torch only)


def _kl_rows(log_p, log_q):
    p = log_p.exp()
    return (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(p))).sum(-1)


def _reduce_rows(per_row, reduction):
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


def _logp(z, T):
    return torch.log_softmax(upcast(z) / T, dim=-1)


def _kd(s, t, T, reduction="batchmean"):
    return _reduce_rows(T ** 2 * _kl_rows(_logp(t, T), _logp(s, T)), reduction)


# ------------------------------------------------------------------ kd_loss

def kd_forgets_t_squared(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    return _kd(student_logits, teacher_logits, temperature, reduction) / temperature ** 2


def kd_multiplies_by_t_once(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    return _kd(student_logits, teacher_logits, temperature, reduction) / temperature


def kd_divides_by_t_squared(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    return _kd(student_logits, teacher_logits, temperature, reduction) / temperature ** 4


def kd_kl_reversed(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    return _kd(teacher_logits, student_logits, temperature, reduction)


def kd_temperature_only_on_teacher(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    return _reduce_rows(T ** 2 * _kl_rows(_logp(teacher_logits, T), _logp(student_logits, 1.0)), reduction)


def kd_temperature_only_on_student(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    return _reduce_rows(T ** 2 * _kl_rows(_logp(teacher_logits, 1.0), _logp(student_logits, T)), reduction)


def kd_mean_over_all_elements(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    per_row = _kd(student_logits, teacher_logits, temperature, "none")
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.sum() / student_logits.numel()


def kd_sum_instead_of_batchmean(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    return _kd(student_logits, teacher_logits, temperature, "none" if reduction == "none" else "sum")


def kd_divides_by_first_dim_only(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    per_row = _kd(student_logits, teacher_logits, temperature, "none")
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.sum() / student_logits.shape[0]


def kd_nan_for_masked_teacher(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    log_pt, log_ps = _logp(teacher_logits, T), _logp(student_logits, T)
    return _reduce_rows(T ** 2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1), reduction)


def kd_log_of_softmax(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    p_t = torch.softmax(upcast(teacher_logits) / T, -1)
    p_s = torch.softmax(upcast(student_logits) / T, -1)
    terms = torch.where(p_t > 0, p_t * (torch.log(p_t) - torch.log(p_s)), torch.zeros_like(p_t))
    return _reduce_rows(T ** 2 * terms.sum(-1), reduction)


def kd_in_half_precision(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    log_pt = torch.log_softmax(teacher_logits / T, -1)
    log_ps = torch.log_softmax(student_logits / T, -1)
    return _reduce_rows(T ** 2 * _kl_rows(log_pt, log_ps), reduction)


def kd_calls_f_kl_div(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    elementwise = F.kl_div(_logp(student_logits, T), _logp(teacher_logits, T), log_target=True, reduction="none")
    return _reduce_rows(T ** 2 * elementwise.nan_to_num().sum(-1), reduction)


def kd_via_logsumexp(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    s, t = upcast(student_logits) / temperature, upcast(teacher_logits) / temperature
    log_pt = t - torch.logsumexp(t, -1, keepdim=True)
    log_ps = s - torch.logsumexp(s, -1, keepdim=True)
    p_t = torch.exp(log_pt)
    terms = (p_t * (log_pt - log_ps)).masked_fill(p_t == 0, 0.0)
    return _reduce_rows(temperature ** 2 * terms.sum(-1), reduction)


def kd_flatten_rows_float64(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    C = student_logits.shape[-1]
    s, t = student_logits.double().reshape(-1, C), teacher_logits.double().reshape(-1, C)
    log_pt, log_ps = torch.log_softmax(t / temperature, 1), torch.log_softmax(s / temperature, 1)
    per_row = temperature ** 2 * (log_pt.exp() * (log_pt - log_ps)).nan_to_num(nan=0.0).sum(1)
    per_row = per_row.to(upcast(student_logits).dtype)
    if reduction == "none":
        return per_row.reshape(student_logits.shape[:-1])
    return per_row.sum() if reduction == "sum" else per_row.sum() / per_row.numel()


def kd_squeezes_rows(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    log_pt, log_ps = _logp(teacher_logits, T), _logp(student_logits, T)
    p_t = log_pt.exp()
    terms = torch.where(p_t > 0, p_t * (log_pt - log_ps), torch.zeros_like(p_t))
    per_row = (T ** 2 * terms).sum(-1, keepdim=True).squeeze()     # drops every axis of size 1, not only the classes
    return _reduce_rows(per_row, reduction)


def kd_sum_over_the_first_axis(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    per_row = _kd(student_logits, teacher_logits, temperature, "none")
    return per_row.sum(0) if reduction == "sum" else _reduce_rows(per_row, reduction)


def kd_nan_to_num(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    T = temperature
    log_pt, log_ps = _logp(teacher_logits, T), _logp(student_logits, T)
    return _reduce_rows(T ** 2 * (log_pt.exp() * (log_pt - log_ps)).nan_to_num().sum(-1), reduction)   # inf -> 3e38


def kd_empty_batchmean_is_zero(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
    per_row = _kd(student_logits, teacher_logits, temperature, "none")
    if reduction == "batchmean":
        return per_row.sum() / max(per_row.numel(), 1)
    return _reduce_rows(per_row, reduction)


# ------------------------------------------------------------------ distillation_objective

def _ce(s, y):
    log_p = torch.log_softmax(upcast(s), -1)
    return -log_p.gather(-1, y[:, None]).mean()


def obj_alpha_swapped(student_logits, teacher_logits, targets, temperature, alpha):
    return (1 - alpha) * _ce(student_logits, targets) + alpha * _kd(student_logits, teacher_logits, temperature)


def obj_ce_at_temperature(student_logits, teacher_logits, targets, temperature, alpha):
    kd = _kd(student_logits, teacher_logits, temperature)
    return alpha * _ce(student_logits / temperature, targets) + (1 - alpha) * kd


def obj_kd_without_t_squared(student_logits, teacher_logits, targets, temperature, alpha):
    kd = _kd(student_logits, teacher_logits, temperature) / temperature ** 2
    return alpha * _ce(student_logits, targets) + (1 - alpha) * kd


def obj_soft_labels_in_the_ce(student_logits, teacher_logits, targets, temperature, alpha):
    p_t = torch.softmax(upcast(teacher_logits), -1)
    ce = -(p_t * torch.log_softmax(upcast(student_logits), -1)).sum(-1).mean()
    return alpha * ce + (1 - alpha) * _kd(student_logits, teacher_logits, temperature)


def obj_no_one_minus_alpha(student_logits, teacher_logits, targets, temperature, alpha):
    return alpha * _ce(student_logits, targets) + _kd(student_logits, teacher_logits, temperature)


def obj_summed_cross_entropy(student_logits, teacher_logits, targets, temperature, alpha):
    ce = _ce(student_logits, targets) * len(targets)
    return alpha * ce + (1 - alpha) * _kd(student_logits, teacher_logits, temperature)


def obj_kd_multiplied_by_teacher_probs(student_logits, teacher_logits, targets, temperature, alpha):
    T = temperature
    log_pt, log_ps = _logp(teacher_logits, T), _logp(student_logits, T)
    kd = T ** 2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()       # 0 * (-inf) = nan where p_t = 0
    return alpha * _ce(student_logits, targets) + (1 - alpha) * kd


def obj_in_half_precision(student_logits, teacher_logits, targets, temperature, alpha):
    T = temperature
    ce = -torch.log_softmax(student_logits, -1).gather(-1, targets[:, None]).mean()
    kd = T ** 2 * _kl_rows(torch.log_softmax(teacher_logits / T, -1), torch.log_softmax(student_logits / T, -1)).mean()
    return alpha * ce + (1 - alpha) * kd


def obj_calls_f_kl_div(student_logits, teacher_logits, targets, temperature, alpha):
    T = temperature
    kd = T ** 2 * F.kl_div(_logp(student_logits, T), _logp(teacher_logits, T), log_target=True, reduction="batchmean")
    return alpha * F.cross_entropy(upcast(student_logits), targets) + (1 - alpha) * kd


def obj_explicit(student_logits, teacher_logits, targets, temperature, alpha):
    kd = kd_via_logsumexp(student_logits, teacher_logits, temperature)
    return alpha * _ce(student_logits, targets) + (1 - alpha) * kd


def obj_f_cross_entropy_and_own_kd(student_logits, teacher_logits, targets, temperature, alpha):
    hard = F.cross_entropy(upcast(student_logits), targets)
    return torch.lerp(_kd(student_logits, teacher_logits, temperature), hard, alpha)


# ------------------------------------------------------------------ nt_xent

def _views(z1, z2, normalise=True):
    z = upcast(torch.cat([z1, z2]))
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalise else z   # as F.normalize: a zero row stays 0


def _nt_from_sim(sim, n):
    partner = torch.arange(2 * n).roll(n)
    log_p = torch.log_softmax(sim, 1)
    return -log_p[torch.arange(2 * n), partner].mean()


def _masked(sim):
    return sim.masked_fill(torch.eye(len(sim), dtype=torch.bool), -math.inf)


def nt_no_diagonal_mask(z1, z2, temperature=0.5):
    z = _views(z1, z2)
    return _nt_from_sim(z @ z.T / temperature, len(z1))


def nt_diagonal_set_to_zero(z1, z2, temperature=0.5):
    z = _views(z1, z2)
    return _nt_from_sim((z @ z.T / temperature).masked_fill(torch.eye(len(z), dtype=torch.bool), 0.0), len(z1))


def nt_self_as_positive(z1, z2, temperature=0.5):
    z = _views(z1, z2)
    log_p = torch.log_softmax(z @ z.T / temperature, 1)
    return -log_p.diagonal().mean()


def nt_first_view_anchors_only(z1, z2, temperature=0.5):
    z, n = _views(z1, z2), len(z1)
    log_p = torch.log_softmax(_masked(z @ z.T / temperature), 1)
    partner = torch.arange(n, 2 * n)
    return -log_p[torch.arange(n), partner].mean()       # only the first view's anchors


def nt_dot_instead_of_cosine(z1, z2, temperature=0.5):
    z = _views(z1, z2, normalise=False)
    return _nt_from_sim(_masked(z @ z.T / temperature), len(z1))


def nt_temperature_multiplied(z1, z2, temperature=0.5):
    z = _views(z1, z2)
    return _nt_from_sim(_masked(z @ z.T * temperature), len(z1))


def nt_cross_view_only(z1, z2, temperature=0.5):
    a, b = upcast(z1), upcast(z2)
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    logits = a @ b.T / temperature
    idx = torch.arange(len(a))
    return -(torch.log_softmax(logits, 1)[idx, idx].mean() + torch.log_softmax(logits.T, 1)[idx, idx].mean()) / 2


def nt_sum_over_anchors(z1, z2, temperature=0.5):
    z = _views(z1, z2)
    return _nt_from_sim(_masked(z @ z.T / temperature), len(z1)) * 2 * len(z1)


def nt_in_half_precision(z1, z2, temperature=0.5):
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    return _nt_from_sim(_masked(z @ z.T / temperature), len(z1))


def nt_norm_without_floor(z1, z2, temperature=0.5):
    z = upcast(torch.cat([z1, z2]))
    z = z / z.norm(dim=1, keepdim=True)                    # 0 / 0 = nan for a zero row
    return _nt_from_sim(_masked(z @ z.T / temperature), len(z1))


def nt_upcasts_bfloat16_only(z1, z2, temperature=0.5):
    z = torch.cat([z1, z2])
    z = F.normalize(z.float() if z.dtype == torch.bfloat16 else z, dim=1)
    return _nt_from_sim(_masked(z @ z.T / temperature), len(z1))


def nt_calls_f_cross_entropy(z1, z2, temperature=0.5):
    z, n = _views(z1, z2), len(z1)
    return F.cross_entropy(_masked(z @ z.T / temperature), torch.arange(2 * n).roll(n))


def nt_explicit_logsumexp(z1, z2, temperature=0.5):
    z = F.normalize(_views(z1, z2, normalise=False), dim=1)
    n = len(z1)
    sim = _masked(z @ z.T / temperature)
    pos = torch.cat([(z[:n] * z[n:]).sum(1), (z[n:] * z[:n]).sum(1)]) / temperature
    return (torch.logsumexp(sim, 1) - pos).mean()


def nt_loop_with_big_negative_mask(z1, z2, temperature=0.5):
    z, n = _views(z1, z2), len(z1)
    losses = []
    for i in range(2 * n):
        row = (z @ z[i]) / temperature
        row = row - 1e9 * (torch.arange(2 * n) == i)
        j = (i + n) % (2 * n)
        losses.append(torch.logsumexp(row, 0) - row[j])
    return torch.stack(losses).mean()


# ------------------------------------------------------------------ bradley_terry_loss

def _margin(r_chosen, r_rejected):
    return upcast(r_chosen) - upcast(r_rejected)


def bt_naive_log_sigmoid(r_chosen, r_rejected, reduction="mean"):
    return reduce(-torch.log(torch.sigmoid(_margin(r_chosen, r_rejected))), reduction)


def bt_naive_log1p_exp(r_chosen, r_rejected, reduction="mean"):
    return reduce(torch.log1p(torch.exp(-_margin(r_chosen, r_rejected))), reduction)


def bt_margin_sign_flipped(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_rejected, r_chosen)
    return reduce(torch.clamp(-d, min=0) + torch.log1p(torch.exp(-d.abs())), reduction)


def bt_margin_clamped(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected).clamp(-50, 50)
    return reduce(torch.log1p(torch.exp(-d)), reduction)


def bt_eps_in_the_log(r_chosen, r_rejected, reduction="mean"):
    return reduce(-torch.log(torch.sigmoid(_margin(r_chosen, r_rejected)) + 1e-7), reduction)


def bt_ignores_reduction(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)
    return (torch.clamp(-d, min=0) + torch.log1p(torch.exp(-d.abs()))).mean()


def bt_in_half_precision(r_chosen, r_rejected, reduction="mean"):
    d = r_chosen - r_rejected
    return reduce(torch.clamp(-d, min=0) + torch.log1p(torch.exp(-d.abs())), reduction)


def bt_max_and_abs_through_autograd(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)              # right values; autograd's gradient at d = 0 is -1, not -1/2
    return reduce(torch.clamp(-d, min=0) + torch.log1p(torch.exp(-d.abs())), reduction)


def bt_reduces_the_first_axis(r_chosen, r_rejected, reduction="mean"):
    loss = neg_log_sigmoid(_margin(r_chosen, r_rejected))
    if reduction == "none":
        return loss
    return loss.sum(0) if reduction == "sum" else loss.mean(0)


def bt_at_least_1d(r_chosen, r_rejected, reduction="mean"):
    return reduce(neg_log_sigmoid(torch.atleast_1d(_margin(r_chosen, r_rejected))), reduction)


def bt_empty_mean_is_zero(r_chosen, r_rejected, reduction="mean"):
    loss = neg_log_sigmoid(_margin(r_chosen, r_rejected))
    return loss.sum() / max(loss.numel(), 1) if reduction == "mean" else reduce(loss, reduction)


def bt_calls_logsigmoid(r_chosen, r_rejected, reduction="mean"):
    return reduce(-F.logsigmoid(_margin(r_chosen, r_rejected)), reduction)


def bt_calls_softplus(r_chosen, r_rejected, reduction="mean"):
    return reduce(F.softplus(-_margin(r_chosen, r_rejected)), reduction)


def bt_calls_bce_with_logits(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)
    return F.binary_cross_entropy_with_logits(d, torch.ones_like(d), reduction=reduction)


def bt_piecewise_where(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)
    positive = torch.log1p(torch.exp(-d.clamp(min=0)))
    negative = -d + torch.log1p(torch.exp(d.clamp(max=0)))
    return reduce(torch.where(d >= 0, positive, negative), reduction)


def bt_two_way_logsumexp(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)        # logits (d, 0): the rewards shifted by r_rejected
    logits = torch.stack([d, torch.zeros_like(d)], dim=-1)
    return reduce(torch.logsumexp(logits, dim=-1) - d, reduction)


def bt_logsumexp_shifted_by_hand(r_chosen, r_rejected, reduction="mean"):
    d = _margin(r_chosen, r_rejected)
    m = torch.clamp(-d, min=0)                     # the larger exponent of (0, -d): a shift the gradient cancels
    return reduce(m + torch.log(torch.exp(-m) + torch.exp(-d - m)), reduction)


EXERCISES = {
    "test_kd_loss": Exercise("kd_loss", differentiable=True, wrong={
        "T squared forgotten": kd_forgets_t_squared,
        "multiplied by T once": kd_multiplies_by_t_once,
        "divided by T squared": kd_divides_by_t_squared,
        "KL reversed (student || teacher)": kd_kl_reversed,
        "temperature only on the teacher": kd_temperature_only_on_teacher,
        "temperature only on the student": kd_temperature_only_on_student,
        "batchmean read as mean over all N*C elements": kd_mean_over_all_elements,
        "sum instead of batchmean": kd_sum_instead_of_batchmean,
        "divides by the first dim only (B, not B*L)": kd_divides_by_first_dim_only,
        "0 * -inf = nan for masked teacher classes": kd_nan_for_masked_teacher,
        "log of softmax (-inf at extreme logits)": kd_log_of_softmax,
        "computed in the input's half precision": kd_in_half_precision,
        "calls F.kl_div": kd_calls_f_kl_div,
        "squeeze(): a (1, C) input's 'none' comes back 0-d": kd_squeezes_rows,
        "'sum' over the first axis only ((B, L, C) gives (L,))": kd_sum_over_the_first_axis,
        "nan_to_num: a student's -inf where the teacher has mass becomes 3e38, not inf": kd_nan_to_num,
        "empty (0, C) batchmean gives 0, not nan": kd_empty_batchmean_is_zero,
    }, right={
        "logsumexp and masked_fill": kd_via_logsumexp,
        "flattened rows in float64": kd_flatten_rows_float64,
    }),
    "test_distillation_objective": Exercise("distillation_objective", differentiable=True, wrong={
        "alpha on the wrong term": obj_alpha_swapped,
        "cross-entropy at temperature T": obj_ce_at_temperature,
        "KD term without T squared": obj_kd_without_t_squared,
        "teacher probabilities instead of hard labels in the CE": obj_soft_labels_in_the_ce,
        "KD term not weighted by 1 - alpha": obj_no_one_minus_alpha,
        "summed instead of mean cross-entropy": obj_summed_cross_entropy,
        "calls F.kl_div": obj_calls_f_kl_div,
        "KD term multiplied by p_t (nan where the teacher masks a class)": obj_kd_multiplied_by_teacher_probs,
        "computed in the input's half precision": obj_in_half_precision,
    }, right={
        "explicit log-softmax CE and logsumexp KD": obj_explicit,
        "F.cross_entropy and lerp": obj_f_cross_entropy_and_own_kd,
    }),
    "test_nt_xent": Exercise("nt_xent", differentiable=True, wrong={
        "self-similarity not masked": nt_no_diagonal_mask,
        "diagonal set to 0 instead of -inf": nt_diagonal_set_to_zero,
        "positive at index i (itself)": nt_self_as_positive,
        "only the first view's anchors": nt_first_view_anchors_only,
        "dot product instead of cosine": nt_dot_instead_of_cosine,
        "temperature multiplied": nt_temperature_multiplied,
        "cross-view negatives only (CLIP-style N x N)": nt_cross_view_only,
        "sum over anchors instead of mean": nt_sum_over_anchors,
        "computed in the input's half precision": nt_in_half_precision,
        "calls F.cross_entropy": nt_calls_f_cross_entropy,
        "normalised without a floor (nan for a zero row)": nt_norm_without_floor,
        "float16 not upcast (only bfloat16)": nt_upcasts_bfloat16_only,
    }, right={
        "explicit logsumexp minus positive": nt_explicit_logsumexp,
        "row by row with a -1e9 mask": nt_loop_with_big_negative_mask,
    }),
    "test_bradley_terry_loss": Exercise("bradley_terry_loss", differentiable=True, wrong={
        "naive -log(sigmoid(d)) (inf at d = -1000)": bt_naive_log_sigmoid,
        "naive log1p(exp(-d)) (overflows)": bt_naive_log1p_exp,
        "margin sign flipped": bt_margin_sign_flipped,
        "margin clamped to +-50": bt_margin_clamped,
        "epsilon inside the log": bt_eps_in_the_log,
        "reduction ignored (always mean)": bt_ignores_reduction,
        "computed in the input's half precision": bt_in_half_precision,
        "calls F.logsigmoid": bt_calls_logsigmoid,
        "calls F.softplus": bt_calls_softplus,
        "calls binary_cross_entropy_with_logits": bt_calls_bce_with_logits,
        "max(-d, 0) + log1p(exp(-|d|)) through autograd (gradient -1 at d = 0)": bt_max_and_abs_through_autograd,
        "reduced over the first axis only ((4, 8) gives (8,))": bt_reduces_the_first_axis,
        "atleast_1d: a 0-d pair's 'none' comes back (1,)": bt_at_least_1d,
        "an empty batch's mean gives 0, not nan": bt_empty_mean_is_zero,
    }, right={
        "piecewise with where": bt_piecewise_where,
        "logsumexp over (d, 0) minus d": bt_two_way_logsumexp,
        "logsumexp of (0, -d) shifted by hand": bt_logsumexp_shifted_by_hand,
    }),
}

mutant_tests(globals())
