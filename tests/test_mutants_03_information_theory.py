"""Notebook 03's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, upcast

ASSIGNMENT = "03_information_theory"


# ------------------------------------------------------------------ shared pieces (elementary torch only)


def _log_where(x, keep):
    """log x where keep, log 1 = 0 elsewhere (so 0 * log(...) stays 0)."""
    return torch.log(torch.where(keep, x, torch.ones_like(x)))


def _entropy(p, dim=-1):
    p = upcast(p)
    return -(p * _log_where(p, p > 0)).sum(dim=dim)


def _cross_entropy(p, q, dim=-1):
    p, q = upcast(p), upcast(q)
    return -(p * _log_where(q, p > 0)).sum(dim=dim)


def _kept(token_nll, mask):
    nll = upcast(token_nll)
    return nll if mask is None else nll[mask]


# ------------------------------------------------------------------ entropy

def entropy_log2_for_every_base(p, dim=-1, base=math.e):
    p = upcast(p)
    return -(p * torch.log2(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=dim) / math.log(base)


def entropy_no_minus_sign(p, dim=-1, base=math.e):
    return -_entropy(p, dim) / math.log(base)


def entropy_nan_from_0_log_0(p, dim=-1, base=math.e):
    p = upcast(p)
    return -(p * torch.log(p)).sum(dim=dim) / math.log(base)


def entropy_eps_inside_log(p, dim=-1, base=math.e):
    p = upcast(p)
    return -(p * torch.log(p + 1e-12)).sum(dim=dim) / math.log(base)


def entropy_log_of_clamped_p(p, dim=-1, base=math.e):
    p = upcast(p)
    return -(p * torch.log(p.clamp_min(1e-10))).sum(dim=dim) / math.log(base)


def entropy_always_last_axis(p, dim=-1, base=math.e):
    return _entropy(p, -1) / math.log(base)


def entropy_multiplies_by_log_base(p, dim=-1, base=math.e):
    return _entropy(p, dim) * math.log(base)


def entropy_always_float32(p, dim=-1, base=math.e):
    return _entropy(p.float(), dim) / math.log(base)


def entropy_in_half_precision(p, dim=-1, base=math.e):
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=dim) / math.log(base)


def entropy_calls_special_entr(p, dim=-1, base=math.e):
    return torch.special.entr(upcast(p)).sum(dim=dim) / math.log(base)


def entropy_calls_xlogy(p, dim=-1, base=math.e):
    p = upcast(p)
    return -torch.xlogy(p, p).sum(dim=dim) / math.log(base)


def entropy_via_categorical(p, dim=-1, base=math.e):
    return torch.distributions.Categorical(probs=upcast(p).movedim(dim, -1)).entropy() / math.log(base)


def entropy_nan_to_num(p, dim=-1, base=math.e):
    p = upcast(p)
    return (-(p * torch.log(p))).nan_to_num(nan=0.0).sum(dim=dim) / math.log(base)


def entropy_bits_then_converted(p, dim=-1, base=math.e):
    p = upcast(p)
    bits = -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(dim=dim)
    return bits * (math.log(2) / math.log(base))


def entropy_checks_with_min(p, dim=-1, base=math.e):
    if p.min() < 0:                                       # min() of an empty batch raises
        raise ValueError("p must be non-negative")
    return _entropy(p, dim) / math.log(base)


# ------------------------------------------------------------------ cross_entropy_of_distributions

def ce_arguments_swapped(p, q, dim=-1, base=math.e):
    return _cross_entropy(q, p, dim) / math.log(base)


def ce_no_minus_sign(p, q, dim=-1, base=math.e):
    return -_cross_entropy(p, q, dim) / math.log(base)


def ce_nan_from_zero_terms(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -(p * torch.log(q)).sum(dim=dim) / math.log(base)


def ce_eps_inside_log(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -(p * torch.log(q + 1e-12)).sum(dim=dim) / math.log(base)


def ce_log_clamped_at_minus_100(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -(p * torch.log(q).clamp_min(-100)).sum(dim=dim) / math.log(base)    # as torch's BCE does


def ce_log2_for_every_base(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -(p * torch.log2(torch.where(p > 0, q, torch.ones_like(q)))).sum(dim=dim) / math.log(base)


def ce_always_last_axis(p, q, dim=-1, base=math.e):
    return _cross_entropy(p, q, -1) / math.log(base)


def ce_mean_over_classes(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -(p * _log_where(q, p > 0)).mean(dim=dim) / math.log(base)


def ce_always_float32(p, q, dim=-1, base=math.e):
    return _cross_entropy(p.float(), q.float(), dim) / math.log(base)


def ce_calls_xlogy(p, q, dim=-1, base=math.e):
    return -torch.xlogy(upcast(p), upcast(q)).sum(dim=dim) / math.log(base)


def ce_calls_f_cross_entropy(p, q, dim=-1, base=math.e):
    p, q = upcast(p).movedim(dim, -1), upcast(q).movedim(dim, -1)
    p, q = torch.broadcast_tensors(p, q)
    flat = F.cross_entropy(torch.log(q).reshape(-1, q.shape[-1]), p.reshape(-1, p.shape[-1]), reduction="none")
    return flat.reshape(p.shape[:-1]) / math.log(base)


def ce_where_on_the_product(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return -torch.where(p > 0, p * torch.log(q), torch.zeros(())).sum(dim=dim) / math.log(base)


def ce_float64_masked_fill(p, q, dim=-1, base=math.e):
    p, q = p.double(), q.double()
    terms = (p * torch.log(q)).masked_fill(p == 0, 0.0)
    return -terms.sum(dim=dim) / math.log(base)


def ce_expands_q_to_p(p, q, dim=-1, base=math.e):
    return _cross_entropy(p, q.expand_as(p), dim) / math.log(base)     # broadcasts one way only


def ce_checks_with_min(p, q, dim=-1, base=math.e):
    if p.min() < 0 or q.min() < 0:                        # min() of an empty batch raises
        raise ValueError("p and q must be non-negative")
    return _cross_entropy(p, q, dim) / math.log(base)


# ------------------------------------------------------------------ kl_divergence

def _kl(p, q, dim=-1):
    p, q = upcast(p), upcast(q)
    keep = p > 0
    return (p * (_log_where(p, keep) - _log_where(q, keep))).sum(dim=dim)


def kl_arguments_swapped(p, q, dim=-1, base=math.e):
    p, q = torch.broadcast_tensors(p, q)
    return _kl(q, p, dim) / math.log(base)


def kl_no_minus_sign(p, q, dim=-1, base=math.e):
    return -_kl(p, q, dim) / math.log(base)


def kl_nan_from_zero_terms(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return (p * (torch.log(p) - torch.log(q))).sum(dim=dim) / math.log(base)


def kl_eps_inside_logs(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return (p * torch.log((p + 1e-10) / (q + 1e-10))).sum(dim=dim) / math.log(base)


def kl_log_of_the_ratio(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    return torch.where(p > 0, p * torch.log(p / q), torch.zeros(())).sum(dim=dim) / math.log(base)


def kl_log2_for_every_base(p, q, dim=-1, base=math.e):
    return _kl(p, q, dim) / math.log(2) / math.log(base)


def kl_always_last_axis(p, q, dim=-1, base=math.e):
    return _kl(p, q, -1) / math.log(base)


def kl_minus_the_entropy_of_q(p, q, dim=-1, base=math.e):
    return (_cross_entropy(p, q, dim) - _entropy(q, dim)) / math.log(base)


def kl_always_float32(p, q, dim=-1, base=math.e):
    return _kl(p.float(), q.float(), dim) / math.log(base)


def kl_in_half_precision(p, q, dim=-1, base=math.e):
    keep = p > 0
    return (p * (torch.log(torch.where(keep, p, torch.ones_like(p)))
                 - torch.log(torch.where(keep, q, torch.ones_like(q))))).sum(dim=dim) / math.log(base)


def kl_calls_f_kl_div(p, q, dim=-1, base=math.e):
    return F.kl_div(torch.log(upcast(q)), upcast(p), reduction="none").sum(dim=dim) / math.log(base)


def kl_torch_distributions(p, q, dim=-1, base=math.e):
    cat_p = torch.distributions.Categorical(probs=upcast(p).movedim(dim, -1))
    cat_q = torch.distributions.Categorical(probs=upcast(q).movedim(dim, -1))
    return torch.distributions.kl_divergence(cat_p, cat_q) / math.log(base)


def kl_cross_entropy_minus_entropy(p, q, dim=-1, base=math.e):
    return (_cross_entropy(p, q, dim) - _entropy(p, dim)) / math.log(base)


def kl_where_on_the_log_difference(p, q, dim=-1, base=math.e):
    p, q = upcast(p), upcast(q)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros(()))
    return terms.sum(dim=dim) / math.log(base)


def kl_expands_q_to_p(p, q, dim=-1, base=math.e):
    return _kl(p, q.expand_as(p), dim) / math.log(base)


def kl_checks_with_min(p, q, dim=-1, base=math.e):
    if p.min() < 0 or q.min() < 0:
        raise ValueError("p and q must be non-negative")
    return _kl(p, q, dim) / math.log(base)


# ------------------------------------------------------------------ perplexity

def ppl_mean_of_exp(token_nll, mask=None):
    return _kept(token_nll, mask).exp().mean()


def ppl_ignores_mask(token_nll, mask=None):
    return upcast(token_nll).mean().exp()


def ppl_divides_by_all_positions(token_nll, mask=None):
    nll = upcast(token_nll)
    kept = nll if mask is None else nll.masked_fill(~mask, 0.0)
    return (kept.sum() / nll.numel()).exp()


def ppl_multiplies_by_mask(token_nll, mask=None):
    nll = upcast(token_nll)
    if mask is None:
        return nll.mean().exp()
    return ((nll * mask).sum() / mask.sum()).exp()


def ppl_base_2(token_nll, mask=None):
    return 2 ** _kept(token_nll, mask).mean()


def ppl_root_of_exp_of_sum(token_nll, mask=None):
    nll = _kept(token_nll, mask)
    return nll.sum().exp() ** (1 / nll.numel())


def ppl_returns_mean_nll(token_nll, mask=None):
    return _kept(token_nll, mask).mean()


def ppl_mean_of_per_sequence_perplexities(token_nll, mask=None):
    nll = upcast(token_nll)
    if nll.dim() < 2:
        return _kept(nll, mask).mean().exp()
    keep = torch.ones_like(nll, dtype=torch.bool) if mask is None else mask
    rows, keep = nll.reshape(-1, nll.shape[-1]), keep.reshape(-1, nll.shape[-1])
    per_row = (rows.masked_fill(~keep, 0.0).sum(dim=1) / keep.sum(dim=1)).exp()
    return per_row[keep.any(dim=1)].mean()


def ppl_nothing_kept_gives_one(token_nll, mask=None):
    nll = _kept(token_nll, mask)
    return (nll.sum() / max(nll.numel(), 1)).exp()


def ppl_in_half_precision(token_nll, mask=None):
    nll = token_nll if mask is None else token_nll[mask]
    return nll.mean().exp()


def ppl_masked_fill_then_divide(token_nll, mask=None):
    nll = upcast(token_nll)
    if mask is None:
        mask = torch.ones_like(nll, dtype=torch.bool)
    return torch.exp(nll.masked_fill(~mask, 0.0).sum() / mask.sum())


def ppl_float64_in_bits(token_nll, mask=None):
    bits = _kept(token_nll, mask).double() / math.log(2)
    return 2 ** bits.mean()


def _kept_finite(token_nll, mask):
    """Treats every non-finite NLL as padding: a real token the model gave probability 0 is dropped too."""
    nll = upcast(token_nll)
    keep = torch.isfinite(nll) if mask is None else mask & torch.isfinite(nll)
    return nll[keep]


def ppl_drops_infinite_tokens(token_nll, mask=None):
    return _kept_finite(token_nll, mask).mean().exp()


def ppl_empty_input_gives_one(token_nll, mask=None):
    nll = upcast(token_nll)
    if mask is None:
        return (nll.sum() / max(nll.numel(), 1)).exp()    # 0 tokens: exp(0) = 1, not nan
    return nll[mask].mean().exp()


# ------------------------------------------------------------------ bits_per_character

def bpc_divides_by_tokens(token_nll, num_characters, mask=None):
    nll = _kept(token_nll, mask)
    return nll.sum() / (math.log(2) * nll.numel())


def bpc_forgets_ln_2(token_nll, num_characters, mask=None):
    return _kept(token_nll, mask).sum() / num_characters


def bpc_multiplies_by_ln_2(token_nll, num_characters, mask=None):
    return _kept(token_nll, mask).sum() * math.log(2) / num_characters


def bpc_log_10(token_nll, num_characters, mask=None):
    return _kept(token_nll, mask).sum() / (math.log(10) * num_characters)


def bpc_ignores_mask(token_nll, num_characters, mask=None):
    return upcast(token_nll).sum() / (math.log(2) * num_characters)


def bpc_bits_per_token(token_nll, num_characters, mask=None):
    return _kept(token_nll, mask).mean() / math.log(2)


def bpc_multiplies_by_mask(token_nll, num_characters, mask=None):
    nll = upcast(token_nll)
    kept = nll if mask is None else nll * mask
    return kept.sum() / (math.log(2) * num_characters)


def bpc_in_half_precision(token_nll, num_characters, mask=None):
    nll = token_nll if mask is None else token_nll[mask]
    return nll.sum() / (math.log(2) * num_characters)


def bpc_times_log2_e(token_nll, num_characters, mask=None):
    return _kept(token_nll, mask).sum() * math.log2(math.e) / num_characters


def bpc_float64_masked_fill(token_nll, num_characters, mask=None):
    nll = token_nll.double()
    if mask is not None:
        nll = nll.masked_fill(~mask, 0.0)
    return (nll / math.log(2)).sum() / num_characters

def bpc_drops_infinite_tokens(token_nll, num_characters, mask=None):
    return _kept_finite(token_nll, mask).sum() / (math.log(2) * num_characters)


def bpc_bits_per_token_times_tokens_per_character(token_nll, num_characters, mask=None):
    nll = _kept(token_nll, mask)
    return nll.mean() / math.log(2) * (nll.numel() / num_characters)     # nothing kept: nan * 0 = nan


EXERCISES = {
    "test_entropy": Exercise("entropy", differentiable=True, wrong={
        "log2 whatever the base": entropy_log2_for_every_base,
        "minus sign missing": entropy_no_minus_sign,
        "0 * log 0 = nan": entropy_nan_from_0_log_0,
        "epsilon inside the log": entropy_eps_inside_log,
        "log of p clamped at 1e-10": entropy_log_of_clamped_p,
        "always sums over the last axis": entropy_always_last_axis,
        "multiplies by ln(base)": entropy_multiplies_by_log_base,
        "always float32 (float64 1e-300 becomes 0)": entropy_always_float32,
        "computed in the input's half precision": entropy_in_half_precision,
        "calls torch.special.entr": entropy_calls_special_entr,
        "calls torch.xlogy": entropy_calls_xlogy,
        "Categorical(probs=p).entropy()": entropy_via_categorical,
        "validates with p.min() (raises on an empty batch)": entropy_checks_with_min,
    }, right={
        "nan_to_num of p log p": entropy_nan_to_num,
        "bits with where, then converted": entropy_bits_then_converted,
    }),
    "test_cross_entropy_of_distributions": Exercise("cross_entropy_of_distributions", differentiable=True, wrong={
        "arguments swapped (-sum q log p)": ce_arguments_swapped,
        "minus sign missing": ce_no_minus_sign,
        "0 * log 0 = nan": ce_nan_from_zero_terms,
        "epsilon inside the log": ce_eps_inside_log,
        "log q clamped at -100 (as torch's BCE)": ce_log_clamped_at_minus_100,
        "log2 whatever the base": ce_log2_for_every_base,
        "always sums over the last axis": ce_always_last_axis,
        "mean over classes instead of sum": ce_mean_over_classes,
        "always float32 (float64 1e-300 becomes 0)": ce_always_float32,
        "calls torch.xlogy": ce_calls_xlogy,
        "calls F.cross_entropy with probability targets": ce_calls_f_cross_entropy,
        "q.expand_as(p) (broadcasts only a smaller q)": ce_expands_q_to_p,
        "validates with min() (raises on an empty batch)": ce_checks_with_min,
    }, right={
        "where on the product": ce_where_on_the_product,
        "float64 with masked_fill": ce_float64_masked_fill,
    }),
    "test_kl_divergence": Exercise("kl_divergence", differentiable=True, wrong={
        "arguments swapped (KL(q || p))": kl_arguments_swapped,
        "minus sign flipped": kl_no_minus_sign,
        "0 * log(0 / q) = nan": kl_nan_from_zero_terms,
        "epsilon inside the logs": kl_eps_inside_logs,
        "log of the ratio p / q (overflows)": kl_log_of_the_ratio,
        "bits whatever the base": kl_log2_for_every_base,
        "always sums over the last axis": kl_always_last_axis,
        "H(p, q) - H(q): entropy of the wrong argument": kl_minus_the_entropy_of_q,
        "always float32 (float64 1e-300 becomes 0)": kl_always_float32,
        "computed in the input's half precision": kl_in_half_precision,
        "calls F.kl_div": kl_calls_f_kl_div,
        "calls torch.distributions.kl_divergence": kl_torch_distributions,
        "q.expand_as(p) (broadcasts only a smaller q)": kl_expands_q_to_p,
        "validates with min() (raises on an empty batch)": kl_checks_with_min,
    }, right={
        "H(p, q) - H(p) from one's own functions": kl_cross_entropy_minus_entropy,
        "where on the log difference": kl_where_on_the_log_difference,
    }),
    "test_perplexity": Exercise("perplexity", wrong={
        "mean of exp instead of exp of mean": ppl_mean_of_exp,
        "mask ignored (padding averaged in)": ppl_ignores_mask,
        "divides by all positions including padding": ppl_divides_by_all_positions,
        "multiplies by the mask (0 * inf = nan)": ppl_multiplies_by_mask,
        "2 ** mean NLL (nats read as bits)": ppl_base_2,
        "root of the exp of the sum (overflows)": ppl_root_of_exp_of_sum,
        "returns the mean NLL (no exp)": ppl_returns_mean_nll,
        "mean of per-sequence perplexities": ppl_mean_of_per_sequence_perplexities,
        "nothing kept gives 1 instead of nan": ppl_nothing_kept_gives_one,
        "computed in the input's half precision": ppl_in_half_precision,
        "drops infinite NLLs (a real token of probability 0)": ppl_drops_infinite_tokens,
        "no mask and no token gives 1 instead of nan": ppl_empty_input_gives_one,
    }, right={
        "masked_fill, sum, divide by the count": ppl_masked_fill_then_divide,
        "float64, in bits, 2 ** mean": ppl_float64_in_bits,
    }),
    "test_bits_per_character": Exercise("bits_per_character", wrong={
        "divides by the number of tokens": bpc_divides_by_tokens,
        "forgets ln 2 (nats per character)": bpc_forgets_ln_2,
        "multiplies by ln 2": bpc_multiplies_by_ln_2,
        "log base 10": bpc_log_10,
        "mask ignored (padding summed in)": bpc_ignores_mask,
        "bits per token": bpc_bits_per_token,
        "multiplies by the mask (0 * inf = nan)": bpc_multiplies_by_mask,
        "computed in the input's half precision": bpc_in_half_precision,
        "drops infinite NLLs (a real token of probability 0)": bpc_drops_infinite_tokens,
        "bits per token x tokens per character (nan when nothing is kept)":
            bpc_bits_per_token_times_tokens_per_character,
    }, right={
        "times log2(e)": bpc_times_log2_e,
        "float64 with masked_fill": bpc_float64_masked_fill,
    }),
}

mutant_tests(globals())
